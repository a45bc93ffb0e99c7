"""CrowdSec bouncers that were away for 10,000 policy versions (issue 20 §4), against a real
`pullwarden serve` with the production history (2,000 versions): pycrowdsec and CrowdSec's Go
custom bouncer (Debian's crowdsec-custom-bouncer, skipped when absent) take their start-up,
then an address, a range and an AS number are revoked and GAP more versions are published
through the admin API while they are away (the Go bouncer SIGSTOPped, pycrowdsec not polling).
Prints what each holds afterwards and how long the far-behind poll took.

    python bench/bench_stale_bouncers.py [--gap 10000]

Takes about 25 minutes on 2 shared cores for 10,000 versions (each one an admin request and a publish)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.loop_helpers import child_env, free_port, pullwarden_cmd, wait_until  # noqa: E402

HOOK = '#!/bin/sh\necho "$1 $2" >> {log}\n'


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gap", type=int, default=10_000)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # a timeout still stops serve and the bouncer
    from pycrowdsec.client import StreamClient
    folder = Path(tempfile.mkdtemp(prefix="pw-stale-"))
    port = free_port()
    cfg = folder / "pullwarden.toml"
    cfg.write_text(f'db = "{folder / "db.duckdb"}"\nhost = "127.0.0.1"\nport = {port}\n')
    keys = {}
    for name, role in (("proxy", "proxy"), ("go", "proxy"), ("admin", "admin")):   # a cursor per key: one each
        out = subprocess.run(pullwarden_cmd() + ["keys", "create", "--role", role, "--name", name, "--config",
                                                 str(cfg), "--json"], capture_output=True, text=True, check=True,
                             env=child_env(), cwd=folder).stdout
        keys[name] = json.loads(out.strip().splitlines()[-1])["key"]
    url = f"http://127.0.0.1:{port}"
    admin = httpx.Client(base_url=url, headers={"X-Api-Key": keys["admin"]}, timeout=60)
    procs = []
    try:
        serve = subprocess.Popen(pullwarden_cmd() + ["serve", "--config", str(cfg)], env=child_env(), cwd=folder,
                                 stdout=open(folder / "serve.log", "wb"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(serve)
        wait_until("serve", lambda: httpx.get(url + "/healthz").status_code == 200 if _up(url) else False, 60)
        ids = {}
        for scope, value in (("ip", "203.0.113.7"), ("range", "198.51.100.0/24"), ("asn", "64500"),
                             ("ip", "203.0.113.9")):
            ids[value] = admin.post("/v1/admin/bans", json={"scope": scope, "value": value, "duration": "24h",
                                                             "reason": "bench"}).json()["id"]
        py = StreamClient(keys["proxy"], lapi_url=url + "/", interval=1, scopes=("ip", "range", "as"))
        py.cycle("true")
        print("pycrowdsec after start-up:", sorted(py.get_current_decisions()))
        go, hook_log = None, folder / "hook.log"
        if shutil.which("crowdsec-custom-bouncer"):
            hook = folder / "hook.sh"
            hook.write_text(HOOK.format(log=hook_log))
            hook.chmod(0o755)
            (folder / "bouncer.yaml").write_text(
                f"bin_path: {hook}\nfeed_via_stdin: false\ntotal_retries: 0\nscenarios_containing: []\n"
                f"scenarios_not_containing: []\norigins: []\npiddir: {folder}\nupdate_frequency: 1s\n"
                f"cache_retention_duration: 1s\ndaemonize: false\nlog_mode: stdout\nlog_level: info\n"
                f"api_url: {url}/\napi_key: {keys['go']}\nprometheus:\n  enabled: false\n"
                f"  listen_addr: 127.0.0.1\n  listen_port: 60602\n")
            go = subprocess.Popen(["crowdsec-custom-bouncer", "-c", str(folder / "bouncer.yaml")],
                                  stdout=open(folder / "bouncer.log", "wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
            procs.append(go)
            wait_until("the Go bouncer's start-up", lambda: hook_log.exists() and
                       "add 203.0.113.7" in hook_log.read_text(), 30)
            os.killpg(go.pid, signal.SIGSTOP)
        else:
            print("crowdsec-custom-bouncer not installed: the Go bouncer is left out")
        start = admin.get("/v1/policy").headers.get("etag")
        for value in ("203.0.113.7", "198.51.100.0/24", "64500"):
            admin.request("DELETE", f"/v1/admin/decisions/{ids[value]}", json={"reason": "false positive"})
        t = time.perf_counter()
        last = None
        for n in range(args.gap):       # a ban, then its revocation: two versions each
            if n % 2 == 0:
                last = admin.post("/v1/admin/bans", json={"scope": "ip", "value": f"10.2.{n // 512}.{n // 2 % 256}",
                                                          "duration": "24h", "reason": "churn"}).json()["id"]
            else:
                admin.request("DELETE", f"/v1/admin/decisions/{last}", json={"reason": "churn"})
        made = time.perf_counter() - t
        end = admin.get("/v1/policy").headers.get("etag")
        print(f"versions {start} -> {end} ({args.gap} made in {made:.0f} s)")
        t = time.perf_counter()
        py.cycle("false")
        print(f"pycrowdsec far-behind poll: {time.perf_counter() - t:.2f} s; holds {sorted(py.get_current_decisions())}")
        if go is not None:
            os.killpg(go.pid, signal.SIGCONT)
            t = time.perf_counter()
            want = {"del 203.0.113.7", "del 198.51.100.0/24"}
            wait_until("the Go bouncer's del", lambda: want <= set(hook_log.read_text().splitlines()), 60)
            print(f"Go custom bouncer: del for the revoked address and range {time.perf_counter() - t:.1f} s after "
                  f"it came back; hook lines: {[x for x in hook_log.read_text().splitlines() if '10.2.' not in x]}")
    finally:
        for p in procs:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            p.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def _up(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=2)
        return True
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()

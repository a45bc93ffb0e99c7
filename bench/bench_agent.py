#!/usr/bin/env python3
"""`pullwarden agent` at large policies (issue 20 §5): real `pullwarden serve` with N bans in its
DuckDB file (4,096 /24s, the rest single addresses, as an import or a week of scanner bans
looks), the real agent, and real nginx that the agent reloads with `nginx -s reload`, as the
README deploys them. For each N:

- `agent --once` into an empty folder: wall time and peak RSS (the kernel's ru_maxrss of that
  process), and the sizes of the files it wrote;
- the running agent (default 10 s polls): for each of --changes new bans, the time from the
  POST /v1/admin/bans that answered to the first 403 nginx gives that address (a request every
  50 ms, the address by X-Forwarded-For through realip), and the agent's own figures for that
  round (rendering, writing), read from its log; its peak RSS over the run.

The time to a 403 is the wait for the agent's next poll (0 to --interval seconds: the agent
polls, nothing pushes), then rendering, writing and nginx's reload; the figures say each part.

    python bench/bench_agent.py                       # 100,000 and 1,000,000 bans
    python bench/bench_agent.py --bans 10000 --changes 3
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

from bench_enforcer import (HOST, BenchError, Children, child_env, free_port, http_json, proc_cpu_seconds,
                            proc_memory, pullwarden_cmd, run, say, utcnow, wait_for)

MB = 1_000_000
RANGES = 4096


def insert_bans(db: Path, n: int) -> None:
    """n bans straight into the decisions table: RANGES /24s (172.16.0.0/24 …) and n - RANGES
    addresses (10.0.0.0 …)."""
    import duckdb
    now = utcnow()
    con = duckdb.connect(str(db))
    try:
        con.execute("""
            insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
            select nextval('decision_seq'),
                   case when i < ? then 'range' else 'ip' end,
                   case when i < ? then '172.' || (16 + i // 256) || '.' || (i % 256) || '.0/24'
                        else '10.' || ((i - ?) // 65536) || '.' || ((i - ?) // 256 % 256) || '.' || ((i - ?) % 256) end,
                   'ban', 'bench', 'import', 'bench import ' || (i % 7), ?, ? from range(?) t(i)""",
                    [RANGES, RANGES, RANGES, RANGES, RANGES, now, now + timedelta(hours=24), n])
    finally:
        con.close()


def timed(cmd: list[str], log: Path, **kw) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in bytes, exit status) of one process."""
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss * 1024, proc.returncode


def status_for(port: int, ip: str) -> int:
    req = urllib.request.Request(f"http://{HOST}:{port}/v2/docker.io/library/busybox/manifests/latest",
                                 headers={"X-Forwarded-For": ip})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def post_ban(base: str, key: str, ip: str) -> None:
    req = urllib.request.Request(base + "/v1/admin/bans", method="POST",
                                 data=json.dumps({"scope": "ip", "value": ip, "reason": "bench change"}).encode(),
                                 headers={"X-Api-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        if r.status != 201:
            raise BenchError(f"POST /v1/admin/bans answered {r.status}")


def nginx_conf(folder: Path, out: Path, port: int) -> Path:
    conf = folder / "nginx.conf"
    conf.write_text(f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log error;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
    uwsgi_temp_path {folder}; scgi_temp_path {folder};
    include {out}/nginx-pullwarden-http.conf;
    server {{
        include {out}/nginx-pullwarden-server.conf;
        listen {HOST}:{port};
        set_real_ip_from 127.0.0.1; real_ip_header X-Forwarded-For;
        location /v2/ {{ return 200 "served\\n"; }}
    }}
}}
""")
    return conf


def settle(pid: int, quiet: float = 2.0, timeout: float = 600) -> None:
    """Until the process has used no CPU for `quiet` seconds (the agent's first poll is done)."""
    deadline, last, since = time.monotonic() + timeout, proc_cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = proc_cpu_seconds(pid)
        if now is None:
            return
        if now - last > 0.05:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


ROUND = re.compile(r"wrote (.*) \(rendered (\d+) file\(s\) in ([\d.]+) s, written in ([\d.]+) s\)")


def bench(n: int, args, workdir: Path, children: Children) -> dict:
    d = workdir / f"bans-{n}"
    d.mkdir(parents=True)
    db, setup_log, env = d / "bench.duckdb", d / "setup.log", child_env()
    empty = d / "empty.toml"
    empty.write_text("# built-in defaults only\n")
    keys = {role: json.loads(run(pullwarden_cmd() + ["keys", "create", "--role", role, "--name", f"bench-{role}",
                                                     "--config", str(empty), "--db", str(db), "--json"],
                                 setup_log, env=env, cwd=d).strip().splitlines()[-1])["key"]
            for role in ("proxy", "admin")}
    insert_bans(db, n)
    source = d / "access.log"
    source.write_text("")
    port, nginx_port = free_port(), free_port()
    cfg = d / "serve.toml"
    cfg.write_text(f'db = {json.dumps(str(db))}\nsources = [{json.dumps(str(source))}]\n'
                   f'host = "{HOST}"\nport = {port}\n')
    base = f"http://{HOST}:{port}"
    say(f"{n:,} bans: starting pullwarden serve ...")
    serve = children.start("pullwarden serve", pullwarden_cmd() + ["serve", "--config", str(cfg)], d / "serve.log",
                           env=env, cwd=d)
    result: dict = {"bans": n}
    try:
        wait_for("serve /healthz", lambda: http_json(base + "/healthz"), serve, d / "serve.log", 1800)
        out = d / "policy"
        agent = pullwarden_cmd() + ["agent", "--api", base, "--key", keys["proxy"], "--out", str(out)]
        seconds, peak, code = timed(agent + ["--once"], d / "agent-once.log", env=env, cwd=d)
        if code != 0:
            raise BenchError(f"agent --once exited {code}: {(d / 'agent-once.log').read_text()[-2000:]}")
        result["once"] = {"seconds": seconds, "peak_rss_bytes": peak}
        result["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if not p.name.startswith(".")}
        with open(out / "block-ips.csv", "rb") as f:
            result["block_lines"] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        say(f"  agent --once: {seconds:.2f} s, peak RSS {peak / MB:.0f} MB; block-ips.csv "
            f"{result['files']['block-ips.csv'] / MB:.1f} MB ({result['block_lines']:,} lines), nginx include "
            f"{result['files']['nginx-pullwarden-http.conf'] / MB:.1f} MB")

        ngx_dir = d / "nginx"
        ngx_dir.mkdir()
        conf = nginx_conf(ngx_dir, out, nginx_port)
        started = time.perf_counter()
        r = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(ngx_dir)], capture_output=True, text=True)
        if r.returncode:
            raise BenchError(f"nginx -t: {r.stderr}")
        result["nginx_t_seconds"] = time.perf_counter() - started
        nginx = children.start("nginx", ["nginx", "-c", str(conf), "-p", str(ngx_dir), "-g", "daemon off;"],
                               d / "nginx.out")
        wait_for("nginx", lambda: status_for(nginx_port, "192.0.2.1") == 200, nginx, d / "nginx.out", 120)
        running = children.start("pullwarden agent", agent + ["--interval", str(args.interval), "--reload",
                                                             f"nginx -c {conf} -p {ngx_dir} -s reload"],
                                 d / "agent.log", env=env, cwd=d)
        settle(running.pid)
        rnd, reached, written = random.Random(n), [], []
        for k in range(args.changes):
            ip = f"11.0.{k // 256}.{k % 256}"
            if status_for(nginx_port, ip) != 200:
                raise BenchError(f"{ip} is refused before its ban")
            post_ban(base, keys["admin"], ip)
            posted, posted_wall = time.perf_counter(), time.time()
            while status_for(nginx_port, ip) != 403:
                if time.perf_counter() - posted > 300 or running.poll() is not None:
                    raise BenchError(f"no 403 for {ip}; see {d / 'agent.log'}")
                time.sleep(0.05)
            reached.append(time.perf_counter() - posted)
            # the include's mtime is when the agent's rename landed: before it, the wait for the
            # poll and the rendering; after it, nginx's reload
            written.append((out / "nginx-pullwarden-http.conf").stat().st_mtime - posted_wall)
            say(f"  ban {k + 1}: nginx refuses {ip} {reached[-1]:.2f} s after the POST answered "
                f"(the include written after {written[-1]:.2f} s)")
            time.sleep(rnd.uniform(0, args.interval))       # the next ban at another point of the poll cycle
        result["agent_memory"] = proc_memory(running.pid)
        children.stop(running)
        children.stop(nginx)
        rounds = [m for m in map(ROUND.search, (d / "agent.log").read_text().splitlines()) if m]
        result["to_403_seconds"], result["to_written_seconds"] = reached, written
        result["rounds"] = [{"wrote": m[1], "rendered": int(m[2]), "render_seconds": float(m[3]),
                             "write_seconds": float(m[4])} for m in rounds]
    finally:
        children.stop(serve)
    return result


def report(results: list[dict]) -> None:
    print("| bans | `agent --once` | its peak RSS | block-ips.csv | nginx include | `nginx -t` | re-render of one ban "
          "(median, max) | write | POST → include written (median, max) | POST → 403 (median, max) | running agent's "
          "peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        renders = [x["render_seconds"] for x in r["rounds"]] or [float("nan")]
        writes = [x["write_seconds"] for x in r["rounds"]] or [float("nan")]
        hwm = (r["agent_memory"].get("hwm_bytes") or 0) / MB
        print(f"| {r['bans']:,} | {r['once']['seconds']:.1f} s | {r['once']['peak_rss_bytes'] / MB:.0f} MB | "
              f"{r['files']['block-ips.csv'] / MB:.1f} MB, {r['block_lines']:,} lines | "
              f"{r['files']['nginx-pullwarden-http.conf'] / MB:.1f} MB | {r['nginx_t_seconds']:.2f} s | "
              f"{statistics.median(renders):.2f} s, {max(renders):.2f} s | {statistics.median(writes):.2f} s | "
              f"{statistics.median(r['to_written_seconds']):.1f} s, {max(r['to_written_seconds']):.1f} s | "
              f"{statistics.median(r['to_403_seconds']):.1f} s, {max(r['to_403_seconds']):.1f} s | {hwm:.0f} MB |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bans", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--changes", type=int, default=5, help="bans posted one after another while the agent runs")
    ap.add_argument("--interval", type=float, default=10.0, help="the agent's --interval (its default: 10)")
    ap.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary folder, removed)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    children = Children()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        workdir = args.workdir or Path(tmp)
        results = []
        try:
            for n in args.bans:
                results.append(bench(n, args, workdir, children))
        finally:
            children.stop_all()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        report(results)


if __name__ == "__main__":
    main()

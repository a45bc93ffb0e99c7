"""What the include's image lists cost nginx: CPU per request with N allow patterns.

    python bench/bench_nginx_images.py                   # 0 and 1,321 patterns, pcre_jit off and on
    python bench/bench_nginx_images.py --patterns 5000 --requests 20000

nginx (one worker, on 127.0.0.1) with the agent's includes rendered from a policy of N allow
patterns shaped like a public mirror's allows.txt (`<registry>/<org>/*`, `<registry>/<org>/<name>`,
over eight registries; DaoCloud's had 1,321 in 2026), answering `return 200` behind the server
include. A client on keep-alive connections sends --requests GETs for an image on no list (the
worst case: every pattern is tried, then the default) and for one on the first pattern; the
figure is the worker's CPU time (utime + stime from /proc) per request, so the client's own cost
is not counted.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enforcer.render import render  # noqa: E402
from enforcer.snapshot import REQUESTS  # noqa: E402

REGISTRIES = ["docker.io", "ghcr.io", "gcr.io", "quay.io", "registry.k8s.io", "mcr.microsoft.com", "nvcr.io",
              "k8s.gcr.io"]


def patterns(n: int) -> list[str]:
    out = []
    for i in range(n):
        reg = REGISTRIES[i % len(REGISTRIES)]
        out.append(f"{reg}/org{i}/*" if i % 2 else f"{reg}/org{i}/name{i}")
    return out


def policy(n: int) -> dict:
    tier = {"requests_per_minute": None, "burst": None, "concurrent": None, "blob_bytes_per_second": None,
            "window_bytes": None, "window_seconds": None}
    return {"bans": {}, "assignments": {}, "allowlist": [], "requests": REQUESTS, "tiers": {"anonymous": tier},
            "default_tiers": {"anonymous": "anonymous", "authenticated": "anonymous"},
            "images": {"blocked": [], "allowed": patterns(n), "unlimited": []}}


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(folder: Path, n: int, jit: bool, requests: int, paths: list[str]) -> dict:
    for name, text in render(policy(n), warn=lambda m: None).items():
        (folder / name).write_text(text)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "nginx.conf").write_text(f"""pid {folder}/nginx.pid; error_log {folder}/error.log;
worker_processes 1; {'pcre_jit on;' if jit else ''}
events {{}}
http {{ access_log off; include {folder}/nginx-pullwarden-http.conf;
  server {{ include {folder}/nginx-pullwarden-server.conf; listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location /v2/ {{ return 200 "ok"; }} }} }}""")
    master = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder), "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        while not (children := subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True,
                                              text=True).stdout.split()):
            time.sleep(0.05)            # the worker starts after the master has opened the socket
        worker = int(children[0])
        result = {}
        for label, path in paths:
            request = f"GET {path} HTTP/1.1\r\nHost: m.example.io\r\n\r\n".encode()
            before, started = cpu(worker), time.monotonic()
            for _ in range(requests):
                conn.sendall(request)
                got = b""
                while not got.endswith(b"ok") and not got.endswith(b"mirror\n"):
                    got += conn.recv(4096)
            result[label] = {"cpu_us": round((cpu(worker) - before) / requests * 1e6, 1),
                             "wall_us": round((time.monotonic() - started) / requests * 1e6, 1),
                             "status": got.split(b" ", 2)[1].decode()}
        conn.close()
        return result
    finally:
        master.terminate()
        master.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", type=int, default=1321)
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    paths = [("on no list", "/v2/docker.io/someone/else/manifests/latest"),
             ("first pattern", "/v2/docker.io/org0/name0/manifests/latest")]
    for n in (0, args.patterns):
        for jit in (False, True):
            with tempfile.TemporaryDirectory() as d:
                r = measure(Path(d), n, jit, args.requests, paths)
            print(f"{n:>6} patterns, pcre_jit {'on ' if jit else 'off'}: " +
                  "; ".join(f"{k}: {v['status']}, {v['cpu_us']} us CPU/request" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()

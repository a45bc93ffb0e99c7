"""Regenerate the sample logs (seeded: the same files every time).

    python sample_logs/generate.py

One day of a small mirror, written in every format pullwarden reads. The traffic mixes
ordinary pulls (docker, containerd, podman, IPv6 clients), a CI job that re-pulls the same
image all day, a downstream proxy with many user agents, a scanner enumerating tags, and
garbage: a TLS handshake on the plain port, truncated and empty lines.
"""
from __future__ import annotations

import gzip
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).parent
TZ = timezone(timedelta(hours=8))
DAY = datetime(2024, 11, 20, tzinfo=timezone.utc)
DOCKER = ("docker/27.3.1 go/go1.22.7 git-commit/41ca978 kernel/6.8.0-57-generic os/linux arch/amd64 "
          "UpstreamClient(Docker-Client/27.3.1 \\(linux\\))")
GITLAB = ("docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/5.15.0-91-generic os/linux arch/amd64 "
          "UpstreamClient(Go-http-client/1.1)")
CLIENTS = [DOCKER, "containerd/v1.7.22", "containers/5.28.1 (github.com/containers/image)",
           "cri-o/1.30.4 go/go1.22.5 os/linux arch/amd64", "buildkit/v0.16 moby/v27.3"]
IMAGES = ["docker.io/library/nginx", "docker.io/library/busybox", "ghcr.io/actions/runner",
          "registry.k8s.io/pause", "quay.io/prometheus/node-exporter", "docker.io/bitnami/redis"]


def digest(rng):
    return "sha256:" + "%064x" % rng.getrandbits(256)


def pulls(rng):
    """(utc time, ip, method, path, status, bytes, ua, xff) of one day."""
    layers = {img: [digest(rng) for _ in range(3)] for img in IMAGES + ["docker.io/library/python"]}
    out = []

    def pull(t, ip, ua, img, tag, xff="-", fresh=True):
        out.append((t, ip, "GET", "/v2/", 401, 87, ua, xff))
        out.append((t, ip, "HEAD", f"/v2/{img}/manifests/{tag}", 200, 0, ua, xff))
        out.append((t + timedelta(milliseconds=40), ip, "GET", f"/v2/{img}/manifests/{tag}", 200, 1573, ua, xff))
        if fresh:
            for n, d in enumerate(layers[img]):
                out.append((t + timedelta(seconds=1 + n), ip, "GET", f"/v2/{img}/blobs/{d}", 200,
                            rng.randrange(2_000_000, 60_000_000), ua, xff))

    people = [f"198.51.100.{n}" for n in range(10, 40)] + [f"2001:db8:5:{n:x}::1" for n in range(1, 9)]
    for _ in range(160):                                   # ordinary pulls
        t = DAY + timedelta(seconds=rng.randrange(86400))
        pull(t, rng.choice(people), rng.choice(CLIENTS), rng.choice(IMAGES), rng.choice(["latest", "1.27", "v3"]))
    for minute in range(0, 24 * 60, 20):                  # CI: the same image every 20 minutes, all day
        pull(DAY + timedelta(minutes=minute), "203.0.113.50", GITLAB, "docker.io/library/python", "3.12")
    for n in range(120):                                   # a reseller: many docker versions, all hours
        ua = DOCKER.replace("27.3.1", f"{rng.choice([20, 23, 24, 25, 26, 27])}.{rng.randrange(4)}.{rng.randrange(9)}")
        pull(DAY + timedelta(seconds=n * 720 + rng.randrange(600)), "192.0.2.80", ua, rng.choice(IMAGES),
             "latest", xff=f"10.{rng.randrange(255)}.{rng.randrange(255)}.{rng.randrange(1, 255)}")
    t = DAY + timedelta(hours=3)                           # a scanner
    for n in range(80):
        img = f"docker.io/library/app{n}"
        out.append((t + timedelta(seconds=n), "198.18.0.66", "GET", f"/v2/{img}/tags/list", 404, 96,
                    "python-requests/2.31.0", "-"))
    out.append((t, "198.18.0.66", "GET", "/v2/_catalog?n=1000", 403, 55, "python-requests/2.31.0", "-"))
    out.append((t, "::ffff:198.51.100.77", "GET", "/token?service=registry.docker.io&scope=repository%3Alibrary%2Fnginx%3Apull",
                200, 4100, "containerd/v1.7.22", "-"))
    out.append((t, "198.51.100.78", "GET", "/v2/library/alpine/manifests/3.20?ns=docker.io", 200, 1638,
                "containerd/1.7.20+unknown", "-"))
    out.append((t, "198.51.100.79", "GET", "/v2/docker.io/library/nginx/blobs/sha256:" + "0" * 64 +
                "?authorization=Bearer%20eyJhbGciOi.secret.token", 307, 0, "containerd/v1.7.22", "-"))
    out.sort(key=lambda r: r[0])
    return out


def esc(s: str) -> str:
    """nginx's escaping of a logged value."""
    return s.replace("\\", "\\x5C").replace('"', "\\x22")


def nginx_line(r, fmt):
    t, ip, method, path, status, size, ua, xff = r
    local = t.astimezone(TZ).strftime("%d/%b/%Y:%H:%M:%S %z")
    line = f'{ip} - - [{local}] "{method} {path} HTTP/1.1" {status} {size} "-" "{esc(ua)}"'
    if fmt == "main":
        line += f' "{xff}"'
    return line


GARBAGE = [
    '203.0.113.9 - - [20/Nov/2024:13:01:02 +0800] "\\x16\\x03\\x01\\x00\\xF7\\x01\\x00\\x00\\xF3\\x03\\x03" 400 157 "-" "-" "-"',
    '203.0.113.9 - - [20/Nov/2024:13:01:03 +0800] "GET /v2/ HTTP/1.1" 200',
    "",
    "this is not a log line",
    '203.0.113.10 - - [31/Foo/2024:99:01:03 +0800] "GET /v2/ HTTP/1.1" 200 0 "-" "curl/8.5.0" "-"',
]


def main() -> None:
    rng = random.Random(7)
    rows = pulls(rng)
    main_lines = [nginx_line(r, "main") for r in rows]
    for n, g in enumerate(GARBAGE):
        main_lines.insert(100 + n * 97, g)
    (HERE / "nginx-main").mkdir(exist_ok=True)
    (HERE / "nginx-main" / "access.log").write_text("\n".join(main_lines) + "\n")

    half = len(rows) // 2                                   # rotated: the older half compressed
    (HERE / "nginx-combined").mkdir(exist_ok=True)
    with gzip.open(HERE / "nginx-combined" / "access.log.2.gz", "wt") as f:
        f.write("\n".join(nginx_line(r, "combined") for r in rows[:half][::3]) + "\n")
    (HERE / "nginx-combined" / "access.log.1").write_text(
        "\n".join(nginx_line(r, "combined") for r in rows[half:][::3]) + "\n")

    crproxy = []                                            # gorilla CLF, out of order, with slog lines
    for r in rows[::4]:
        t, ip, method, path, status, size, _ua, _x = r
        if "/blobs/" in path and status == 200:
            status, size = 307, 0                           # blob cache: redirect to object storage
        stamp = t.astimezone(TZ).strftime("%d/%b/%Y:%H:%M:%S %z")
        crproxy.append(f'{ip} - - [{stamp}] "{method} {path} HTTP/2.0" {status} {size}')
        if ip == "203.0.113.50" and rng.random() < 0.3:
            crproxy.append(json.dumps({"time": t.isoformat(), "level": "INFO", "msg": "exceed limit",
                                       "remoteAddr": ip, "aver": 1.9, "limit": 1.0}))
    for i in range(0, len(crproxy) - 1, 7):                 # lines end in completion order
        crproxy[i], crproxy[i + 1] = crproxy[i + 1], crproxy[i]
    crproxy.insert(50, '{"time":"2024-11-20T01:00:00Z","level":"INFO","msg":"Cache hit","digest":"sha256:ab"}')
    crproxy.insert(60, '{"time": broken json')
    (HERE / "crproxy").mkdir(exist_ok=True)
    (HERE / "crproxy" / "crproxy.log").write_text("\n".join(crproxy) + "\n")

    js = []
    for r in rows[1::5]:
        t, ip, method, path, status, size, ua, xff = r
        uri, _, args = path.partition("?")
        js.append(json.dumps({"time_iso8601": t.astimezone(TZ).isoformat(), "remote_addr": ip, "remote_user": "",
                              "request_method": method, "request_uri": path, "status": str(status),
                              "body_bytes_sent": str(size), "request_time": "0.012", "http_user_agent": ua,
                              "http_x_forwarded_for": "" if xff == "-" else xff, "host": "m.example.io"},
                             separators=(",", ":")))
    js.insert(30, '{"remote_addr":"198.51.100.3","status":"200"}')
    (HERE / "nginx-json").mkdir(exist_ok=True)
    (HERE / "nginx-json" / "access.json").write_text("\n".join(js) + "\n")

    fmt = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
           '"$http_referer" "$http_user_agent" "$http_x_forwarded_for" $request_time')
    (HERE / "custom-format").mkdir(exist_ok=True)
    (HERE / "custom-format" / "log_format.txt").write_text(fmt + "\n")
    (HERE / "custom-format" / "access.txt").write_text(
        "\n".join(nginx_line(r, "main") + f" {rng.random() * 2:.3f}" for r in rows[2::6]) + "\n")


if __name__ == "__main__":
    main()

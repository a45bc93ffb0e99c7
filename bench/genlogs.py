"""Synthetic mirror access logs for benchmarks: realistic shape, seeded, any size.

    python bench/genlogs.py --lines 1000000 --format main > /tmp/big.log

The mix follows what a public mirror sees: many light pullers, a few CI jobs that
re-pull the same images, a downstream proxy with many user agents, a tag scanner.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import zlib
from datetime import datetime, timedelta, timezone

IMAGES = [
    "docker.io/library/nginx", "docker.io/library/busybox", "docker.io/library/python",
    "docker.io/library/golang", "docker.io/bitnami/redis", "ghcr.io/actions/runner",
    "registry.k8s.io/pause", "registry.k8s.io/kube-apiserver", "quay.io/prometheus/node-exporter",
    "gcr.io/distroless/static", "nvcr.io/nvidia/pytorch", "docker.io/library/alpine",
    "mcr.microsoft.com/dotnet/runtime", "quay.io/jetstack/cert-manager-controller",
]
TAGS = ["latest", "1.27", "3.12-slim", "v1.31.2", "3.9", "stable", "24.01-py3", "alpine"]
UAS = [
    "docker/27.3.1 go/go1.22.7 git-commit/41ca978 kernel/6.8.0-57-generic os/linux arch/amd64 UpstreamClient(Docker-Client/27.3.1 \\x5C(linux\\x5C))",
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/5.15.0-91-generic os/linux arch/amd64 UpstreamClient(Go-http-client/1.1)",
    "containerd/v1.7.22",
    "containerd/1.7.20+unknown",
    "cri-o/1.30.4 go/go1.22.5 os/linux arch/amd64",
    "containers/5.28.1 (github.com/containers/image)",
    "buildkit/v0.16 moby/v27.3",
    "go-containerregistry/v0.20.2",
    "harbor-registry-client",
    "Helm/3.16.2",
    "curl/8.5.0",
]
TZ = timezone(timedelta(hours=8))


def digest(rng: random.Random) -> str:
    return "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


def client_ips(rng: random.Random, n: int) -> list[str]:
    ips = []
    for i in range(n):
        if i % 7 == 0:
            ips.append(f"2001:db8:{rng.randrange(1, 0xffff):x}::{rng.randrange(1, 0xffff):x}")
        else:
            ips.append(f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return ips


def catalog(rng: random.Random, n: int) -> list[str]:
    """The well-known images plus n generated ones spread over the mirrored registries
    (a public mirror's allow-list held 1,321 patterns in 2026)."""
    registries = ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "nvcr.io", "mcr.microsoft.com"]
    words = ["app", "api", "web", "worker", "agent", "operator", "proxy", "db", "cache", "runner", "exporter", "ml"]
    out = list(IMAGES)
    while len(out) < n:
        out.append(f"{rng.choice(registries)}/{rng.choice(words)}{rng.randrange(100)}/{rng.choice(words)}-{rng.randrange(1000)}")
    return out


def user_agents(rng: random.Random) -> list[str]:
    """The client mix, with the version spread a real mirror sees."""
    out = list(UAS)
    for _ in range(60):
        major = rng.choice([20, 23, 24, 25, 26, 27, 28])
        out.append(UAS[0].replace("27.3.1", f"{major}.{rng.randrange(4)}.{rng.randrange(9)}"))
        out.append(f"containerd/v1.{rng.choice([6, 7])}.{rng.randrange(30)}")
    return out


def requests(rng: random.Random, lines: int, start: datetime):
    """Yield (ip, user, time, method, path, status, bytes, ua, xff, rt) tuples."""
    # ~110k addresses a month reach the mirror: some 25k on a day of 1M requests
    ips = client_ips(rng, max(50, lines // 40))
    images = catalog(rng, max(len(IMAGES), lines // 500))
    blobs = {img: [digest(rng) for _ in range(rng.randrange(3, 9))] for img in images}
    agents = user_agents(rng)
    step = timedelta(seconds=86400 * 2 / max(lines, 1))
    t = start
    for n in range(lines):
        t += step
        # half the requests from a heavy-tailed few, half spread over the whole pool
        ip = ips[int(rng.paretovariate(1.2)) % len(ips)] if rng.random() < 0.5 else ips[rng.randrange(len(ips))]
        ua = agents[zlib.crc32(ip.encode()) % len(agents)]
        # popularity is skewed: a few base images get most pulls
        img = images[int(rng.paretovariate(0.8)) % len(images)] if rng.random() < 0.6 else rng.choice(images)
        roll = rng.random()
        status, size, method = 200, 0, "GET"
        if roll < 0.08:
            path = "/v2/"
            status, size = 401, 87
        elif roll < 0.22:
            path = f"/v2/{img}/manifests/{rng.choice(TAGS)}"
            method = "HEAD" if roll < 0.12 else "GET"
            size = 0 if method == "HEAD" else rng.randrange(500, 9000)
        elif roll < 0.24:
            path = f"/v2/{img}/tags/list"
            size = 1200
        elif roll < 0.25:
            path = f"/v2/{img}/manifests/nosuchtag"
            status, size = 404, 96
        else:
            path = f"/v2/{img}/blobs/{rng.choice(blobs[img])}"
            size = int(rng.lognormvariate(15, 2.5)) % (2 << 30)
        xff = f"10.{rng.randrange(256)}.0.{rng.randrange(256)}" if roll > 0.97 else "-"
        yield ip, "-", t, method, path, status, size, ua, xff, rng.random() * 3


def render(fmt: str, r) -> str:
    ip, user, t, method, path, status, size, ua, xff, rt = r
    local = t.astimezone(TZ).strftime("%d/%b/%Y:%H:%M:%S %z")
    if fmt == "combined":
        return f'{ip} - {user} [{local}] "{method} {path} HTTP/1.1" {status} {size} "-" "{ua}"'
    if fmt == "main":
        return f'{ip} - {user} [{local}] "{method} {path} HTTP/1.1" {status} {size} "-" "{ua}" "{xff}"'
    if fmt == "clf":
        return f'{ip} - {user} [{local}] "{method} {path} HTTP/2.0" {status} {size}'
    if fmt == "nginx-json":
        return json.dumps({"time_iso8601": t.astimezone(TZ).isoformat(timespec="seconds"),
                           "remote_addr": ip, "remote_user": "", "request_method": method,
                           "request_uri": path, "status": status, "body_bytes_sent": size,
                           "http_user_agent": ua.replace("\\x5C", "\\"), "http_x_forwarded_for": xff if xff != "-" else "",
                           "request_time": round(rt, 3)}, separators=(",", ":"))
    raise SystemExit(f"unknown format {fmt}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--format", default="main", choices=["combined", "main", "clf", "nginx-json"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", default="2024-11-20T00:00:00+00:00")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout
    buf = []
    for r in requests(rng, args.lines, datetime.fromisoformat(args.start)):
        buf.append(render(args.format, r))
        if len(buf) >= 10000:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")


if __name__ == "__main__":
    main()

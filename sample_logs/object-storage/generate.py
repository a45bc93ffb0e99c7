"""Regenerate the object-storage samples (seeded: the same files every time).

    python sample_logs/object-storage/generate.py

One hour of a redirect-mode mirror's blob downloads as three stores log them: S3 server
access logs, Aliyun OSS access logs and Cloudflare Logpush http_requests (JSON lines). Each
download carries the signed URL CRProxy hands out (its referer=<client-ip>:<host>/<image>
and the store's signature, which ingest scrubs), and each file holds the look-alikes a
reader must get right: a HEAD, a PUT by the mirror itself, a 403 for an expired link, an
IPv6 downloader, a link fetched from an address other than the one that asked (relayed),
and one damaged line. The files are named as the stores name them (no .log suffix), so
`pullwarden ingest sample_logs/` leaves them out; read them with
`pullwarden ingest 'sample_logs/object-storage/*/*'`.
"""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The line writers live in sample_logs/objectstores.py (the scenario generator's redirect mode
# writes the same formats); tests load this file by path and call them from here.
from sample_logs.objectstores import (  # noqa: F401
    WRITERS,
    key,
    logpush_lines,
    oss_lines,
    referer,
    s3_lines,
)

HERE = Path(__file__).parent
START = datetime(2024, 11, 20, 10, 0, tzinfo=UTC)
IMAGES = ["docker.io/library/nginx", "docker.io/library/python", "ghcr.io/actions/runner", "registry.k8s.io/pause"]
CLIENTS = ["198.51.100.10", "198.51.100.11", "203.0.113.50", "2001:db8:5:1::1"]
UAS = ["containerd/v1.7.22", "docker/27.3.1 go/go1.22.7 os/linux arch/amd64", "cri-o/1.30.4 go/go1.22.5"]


def downloads(rng: random.Random, count: int = 24) -> list[dict]:
    out = []
    for n in range(count):
        asker = rng.choice(CLIENTS)
        relayed = n % 8 == 5                      # handed on: another address fetches the link
        size = rng.randrange(2_000_000, 60_000_000)
        status = 403 if n == 17 else 200          # an expired link
        out.append({"ts": START + timedelta(seconds=(n * 150 + rng.randrange(100)) * 24 // count),
                    "ip": "192.0.2.77" if relayed else asker, "asker": asker, "image": rng.choice(IMAGES),
                    "digest": f"{rng.getrandbits(256):064x}", "size": size,
                    "bytes": size if status == 200 else 243, "status": status, "ua": rng.choice(UAS),
                    "method": "HEAD" if n == 9 else "GET"})
    return out


def main() -> None:
    rng = random.Random(13)
    rows = downloads(rng)
    for folder, name, lines in (
            ("s3", "mirror-blobs-logs/2024-11-20-10-00-00-5C3E6F7A8B9C0D1E", s3_lines(rng, rows)),
            ("oss", "MyLog-mirror-blobs2024-11-20-10-00-00-0001", oss_lines(rng, rows)),
            ("logpush", "20241120T100000Z_20241120T110000Z_4f1c2a8e", logpush_lines(rng, rows))):
        path = HERE / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

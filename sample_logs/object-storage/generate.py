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

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

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


def key(d: dict) -> str:
    return f"docker/registry/v2/blobs/sha256/{d['digest'][:2]}/{d['digest']}/data"


def referer(d: dict) -> str:
    return quote(f"{d['asker']}:{d['image']}", safe="")


def s3_lines(rng, rows, damaged: bool = True) -> list[str]:
    owner = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    lines = []
    for d in rows:
        q = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20241120%2Fus-east-1%2Fs3%2F"
             f"aws4_request&X-Amz-Date=20241120T100000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host"
             f"&referer={referer(d)}&X-Amz-Signature={rng.getrandbits(256):064x}")
        op = "REST.HEAD.OBJECT" if d["method"] == "HEAD" else "REST.GET.OBJECT"
        sent = "-" if d["method"] == "HEAD" else d["bytes"]
        err = "AccessDenied" if d["status"] == 403 else "-"
        lines.append(
            f"{owner} mirror-blobs [{d['ts']:%d/%b/%Y:%H:%M:%S +0000}] {d['ip']} - {rng.getrandbits(64):016X} {op} "
            f"{key(d)} \"{d['method']} /mirror-blobs/{key(d)}?{q} HTTP/1.1\" {d['status']} {err} {sent} {d['size']} "
            f"{rng.randrange(50, 4000)} {rng.randrange(5, 40)} \"-\" \"{d['ua']}\" - "
            f"{rng.getrandbits(240):060x}= SigV4 TLS_AES_128_GCM_SHA256 QueryString "
            f"mirror-blobs.s3.us-east-1.amazonaws.com TLSv1.3 - -")
    if not damaged:                                 # bench/bench_ingest.py: every line a download
        return lines
    lines.insert(7, f"{owner} mirror-blobs [20/Nov/2024:10:17:00 +0000] 10.0.0.5 arn:aws:iam::123456789012:user/crproxy "
                    f"{rng.getrandbits(64):016X} REST.PUT.OBJECT {key(rows[0])} \"PUT /mirror-blobs/{key(rows[0])} HTTP/1.1\" "
                    "200 - - 4400000 310 25 \"-\" \"aws-sdk-go-v2/1.30.3\" - x= SigV4 TLS_AES_128_GCM_SHA256 AuthHeader "
                    "mirror-blobs.s3.us-east-1.amazonaws.com TLSv1.3 - -")
    lines.insert(12, lines[11][:120])               # a record cut short
    return lines


def oss_lines(rng, rows, damaged: bool = True) -> list[str]:
    lines = []
    for d in rows:
        expires = int(d["ts"].timestamp()) + 1200
        q = (f"OSSAccessKeyId=LTAI5tEXAMPLEKEYID&Expires={expires}&referer={referer(d)}"
             f"&Signature={quote(f'{rng.getrandbits(160):x}', safe='')}")
        op = "HeadObject" if d["method"] == "HEAD" else "GetObject"
        local = d["ts"].astimezone(timezone(timedelta(hours=8)))
        lines.append(
            f"{d['ip']} - - [{local:%d/%b/%Y:%H:%M:%S +0800}] \"{d['method']} /{key(d)}?{q} HTTP/1.1\" {d['status']} "
            f"{0 if d['method'] == 'HEAD' else d['bytes']} {rng.randrange(50, 4000)} \"-\" \"{d['ua']}\" "
            f"\"mirror-blobs.oss-cn-hangzhou.aliyuncs.com\" \"{rng.getrandbits(96):024X}\" \"true\" \"-\" \"{op}\" "
            f"\"mirror-blobs\" \"{quote(key(d), safe='')}\" {d['size']} {rng.randrange(5, 40)} "
            f"\"{'AccessDenied' if d['status'] == 403 else '-'}\" {rng.randrange(300, 900)} \"1657136103983691\" - \"-\" "
            "\"standard\" \"-\" \"-\" \"-\"")
    if not damaged:
        return lines
    lines.insert(5, lines[4].replace(f" {rows[4]['status']} ", " OK ", 1))   # a damaged status
    return lines


def logpush_lines(rng, rows, damaged: bool = True) -> list[str]:
    lines = []
    for d in rows:
        path = f"/{key(d)}"
        lines.append(json.dumps({
            "ClientIP": d["ip"], "ClientRequestHost": "blobs.mirror.example", "ClientRequestMethod": d["method"],
            "ClientRequestPath": path,
            "ClientRequestURI": f"{path}?referer={referer(d)}&X-Amz-Expires=1200&X-Amz-Signature={rng.getrandbits(256):064x}",
            "ClientRequestReferer": "", "ClientRequestUserAgent": d["ua"],
            "EdgeResponseBytes": 0 if d["method"] == "HEAD" else d["bytes"], "EdgeResponseStatus": d["status"],
            "EdgeStartTimestamp": d["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"), "RayID": f"{rng.getrandbits(64):016x}"}))
    if not damaged:
        return lines
    lines.insert(3, '{"ClientIP": "198.51.100.10", "EdgeStartTimestamp": ')   # cut short
    return lines


WRITERS = {"s3": s3_lines, "oss": oss_lines, "logpush": logpush_lines}


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

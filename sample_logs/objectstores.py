"""One line writer per object-store log format: S3 server access logs (Huawei OBS writes the
same layout), Aliyun OSS access logs and Cloudflare Logpush ``http_requests`` (JSON lines).

Used by sample_logs/object-storage/generate.py (an hour of downloads in all three formats),
by the redirect mode of sample_logs/scenarios.py and by bench/bench_ingest.py, so each format
is written in one place.

A row is a dict: ``ts`` (aware datetime, when the store received the request), ``ip`` (who
downloaded), ``asker`` (the address in the signed URL's ``referer=<ip>:<host>/<image>``; None:
a URL without one, as an older proxy signs them, or a read of the bucket with no signed URL),
``image`` (host/name), ``digest`` (hex, no ``sha256:``), ``size`` (the object's), ``bytes``
(sent: a 206 Range part sends less than ``size``), ``status``, ``ua``, ``method`` (GET, HEAD, PUT
— the mirror filling its cache — or LIST: the mirror's storage driver Stat-ing the blob before a
redirect, a ListObjects with max-keys=1 answered with ``bytes`` of XML) and, optionally, ``rid``
(the store's request id; drawn from ``rng`` when absent), ``unsigned`` (a read with no signed URL)
and ``requester`` (who the store says asked: S3's Requester, OSS's Requester Aliyun ID; a read
with ``requester`` and ``unsigned`` was made with that identity's credentials in a header).
The signature and the store's other noise are drawn from ``rng``.
"""
from __future__ import annotations

import json
from datetime import timedelta, timezone
from urllib.parse import quote

S3_OPS = {"GET": "REST.GET.OBJECT", "HEAD": "REST.HEAD.OBJECT", "PUT": "REST.PUT.OBJECT", "LIST": "REST.GET.BUCKET"}
OSS_OPS = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "LIST": "GetBucket"}
S3_OWNER = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"


def key(d: dict) -> str:
    return f"docker/registry/v2/blobs/sha256/{d['digest'][:2]}/{d['digest']}/data"


def referer(d: dict) -> str:
    return quote(f"{d['asker']}:{d['image']}", safe="")


def _signed(d: dict) -> bool:
    """A download through a signed URL (the mirror's own PUT and LIST are signed by its credentials
    in a header instead)."""
    return d["method"] not in ("PUT", "LIST") and not d.get("unsigned")


def _listing(d: dict) -> str:
    """distribution's s3-aws (v2.8) and CRProxy's oss/obs Stat: ListObjects(prefix=<key>, max-keys=1)."""
    return f"max-keys=1&prefix={quote(key(d), safe='')}"


def s3_lines(rng, rows, damaged: bool = True) -> list[str]:
    owner = S3_OWNER
    lines = []
    for d in rows:
        ref = f"&referer={referer(d)}" if d.get("asker") else ""
        q = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20241120%2Fus-east-1%2Fs3%2F"
             f"aws4_request&X-Amz-Date=20241120T100000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host"
             f"{ref}&X-Amz-Signature={rng.getrandbits(256):064x}")
        uri = f"/mirror-blobs/{key(d)}?{q}" if _signed(d) else f"/mirror-blobs/{key(d)}"
        op = S3_OPS[d["method"]]
        sent = "-" if d["method"] in ("HEAD", "PUT") else d["bytes"]
        err = "AccessDenied" if d["status"] == 403 else "-"
        rid = d.get("rid") or f"{rng.getrandbits(64):016X}"
        requester = d.get("requester") or ("arn:aws:iam::123456789012:user/crproxy" if d["method"] == "PUT" else "-")
        auth = "QueryString" if _signed(d) else "AuthHeader" if requester != "-" or d["method"] == "PUT" else "-"
        method, size, k = d["method"], d["size"], key(d)
        if method == "LIST":
            method, uri, size, k = "GET", f"/mirror-blobs?{_listing(d)}", "-", "-"
        lines.append(
            f"{owner} mirror-blobs [{d['ts']:%d/%b/%Y:%H:%M:%S +0000}] {d['ip']} {requester} {rid} {op} "
            f"{k} \"{method} {uri} HTTP/1.1\" {d['status']} {err} {sent} {size} "
            f"{rng.randrange(50, 4000)} {rng.randrange(5, 40)} \"-\" \"{d['ua']}\" - "
            f"{rng.getrandbits(240):060x}= SigV4 TLS_AES_128_GCM_SHA256 {auth} "
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
        ref = f"&referer={referer(d)}" if d.get("asker") else ""
        q = (f"OSSAccessKeyId=LTAI5tEXAMPLEKEYID&Expires={expires}{ref}"
             f"&Signature={quote(f'{rng.getrandbits(160):x}', safe='')}")
        uri = f"/{key(d)}?{q}" if _signed(d) else f"/{key(d)}"
        op = OSS_OPS[d["method"]]
        local = d["ts"].astimezone(timezone(timedelta(hours=8)))
        took = rng.randrange(50, 4000)             # drawn in this order: the committed samples depend on it
        rid = d.get("rid") or f"{rng.getrandbits(96):024X}"
        method, size, k = d["method"], d["size"], quote(key(d), safe="")
        if method == "LIST":
            method, uri, size, k = "GET", f"/?{_listing(d)}", "-", "-"
        lines.append(
            f"{d['ip']} - - [{local:%d/%b/%Y:%H:%M:%S +0800}] \"{method} {uri} HTTP/1.1\" {d['status']} "
            f"{0 if d['method'] in ('HEAD', 'PUT') else d['bytes']} {took} \"-\" \"{d['ua']}\" "
            f"\"mirror-blobs.oss-cn-hangzhou.aliyuncs.com\" \"{rid}\" \"true\" \"{d.get('requester') or '-'}\" \"{op}\" "
            f"\"mirror-blobs\" \"{k}\" {size} {rng.randrange(5, 40)} "
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
        ref = f"referer={referer(d)}&" if d.get("asker") else ""
        uri = f"{path}?{ref}X-Amz-Expires=1200&X-Amz-Signature={rng.getrandbits(256):064x}" if _signed(d) else path
        lines.append(json.dumps({
            "ClientIP": d["ip"], "ClientRequestHost": "blobs.mirror.example", "ClientRequestMethod": d["method"],
            "ClientRequestPath": path,
            "ClientRequestURI": uri,
            "ClientRequestReferer": "", "ClientRequestUserAgent": d["ua"],
            "EdgeResponseBytes": 0 if d["method"] in ("HEAD", "PUT") else d["bytes"], "EdgeResponseStatus": d["status"],
            "EdgeStartTimestamp": d["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "RayID": d.get("rid") or f"{rng.getrandbits(64):016x}"}))
    if not damaged:
        return lines
    lines.insert(3, '{"ClientIP": "198.51.100.10", "EdgeStartTimestamp": ')   # cut short
    return lines


WRITERS = {"s3": s3_lines, "oss": oss_lines, "logpush": logpush_lines}


def request_id(rng, store: str) -> str:
    """A request id as ``store`` spells them (S3 16 hex digits, OSS 24, a Logpush RayID 16 lower-case)."""
    return {"s3": lambda: f"{rng.getrandbits(64):016X}", "oss": lambda: f"{rng.getrandbits(96):024X}",
            "logpush": lambda: f"{rng.getrandbits(64):016x}"}[store]()

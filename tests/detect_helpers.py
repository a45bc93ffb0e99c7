"""Events written straight into the store, for detection tests that need exact shapes."""
from __future__ import annotations

from datetime import datetime, timedelta

from core.settings import load

T0 = datetime(2024, 11, 20)
COLS = ["ts", "client_ip", "peer_ip", "remote_user", "method", "status", "bytes", "user_agent",
        "registry", "repository", "kind", "digest", "forwarded_for"]


def ev(ts, ip, kind="blob", *, status=200, nbytes=100 << 20, digest="sha256:aa", repo="library/python",
       ua="docker/27.3.1", user=None, method="GET", xff=None):
    return (ts, ip, ip, user, method, status, nbytes, ua, "docker.io", repo, kind,
            digest if kind == "blob" else None, xff)


def add_events(store, rows):
    cols = list(zip(*rows))
    types = ["timestamp", "varchar", "varchar", "varchar", "varchar", "smallint", "bigint", "varchar",
             "varchar", "varchar", "varchar", "varchar", "varchar"]
    select = ", ".join(f"unnest(${i}::{t}[])" for i, t in enumerate(types, 1))
    store.execute(f"insert into events ({', '.join(COLS)}, file_id) select {select}, 0", [list(c) for c in cols])


def storm(ip, start=T0, hours=24, per_hour=4, blobs=3, ua="docker/24.0.7"):
    """A CI job pulling the same image `per_hour` times an hour, every blob every time."""
    out = []
    for h in range(hours):
        for k in range(per_hour):
            t = start + timedelta(hours=h, minutes=k * 60 // per_hour)
            out.append(ev(t, ip, "manifest", nbytes=1500, ua=ua))
            out += [ev(t + timedelta(seconds=1 + b), ip, digest=f"sha256:{b:02d}", ua=ua) for b in range(blobs)]
    return out


def light(ip, start=T0, hour=10):
    t = start + timedelta(hours=hour)
    return [ev(t, ip, "manifest", nbytes=1500), ev(t, ip, digest="sha256:ff")]


def settings(**overrides):
    return load(None, overrides, environ={})


RULE = """name: test-storm
description: blob storms
entity: address
window: 24h
where: blob_gets >= 30
action: ban
duration: 1h
escalation: {factor: 2, cap: 3h}
reason: "{blob_gets:int} blob downloads"
cases:
  - {expect: match, features: {blob_gets: 30}}
  - {expect: no-match, features: {blob_gets: 29}}
"""

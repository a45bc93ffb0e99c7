"""The CrowdSec start-up stream written from packed entries column by column
(routes/crowdsec.new_bans) says exactly what the one-Entry-at-a-time writer says, for every
filter a bouncer sends and for values that need JSON escaping."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from starlette.requests import Request

from enforcer.entries import Entries, Entry
from enforcer.routes.crowdsec import Filter, _new_bans_of, new_bans

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def bans() -> dict[str, Entry]:
    out = {}
    for n in range(3000):
        key = f"ip:10.0.{n >> 8}.{n & 255}" if n % 10 else f"range:10.{n % 200}.0.0/16"
        rule = ("ci-repull-storm", "error-storm", "manual")[n % 3]
        until = f"2026-11-{27 + n % 3}T{n % 24:02d}:{n % 60:02d}:07" + (".250000" if n % 11 == 0 else "")
        out[key] = Entry(key, n + 1, until, f"{n} requests", rule)
    for key in ("asn:64500", "ip:2001:db8::1", "ip:::ffff:192.0.2.1"):
        out[key] = Entry(key, 9000 + len(out), "2026-11-28T00:00:00", "hand", "manual")
    return out


def filtered(query: str) -> Filter:
    return Filter(Request({"type": "http", "method": "GET", "query_string": query.encode(), "headers": [],
                           "path": "/v1/decisions/stream"}))


def decisions(pieces) -> list[dict]:
    return json.loads("[" + ",".join(p.decode() if isinstance(p, bytes) else p for p in pieces) + "]")


@pytest.mark.parametrize("query", ["startup=true", "startup=true&scopes=range", "startup=true&scopes=ip,range,as",
                                   "startup=true&scenarios_containing=storm",
                                   "startup=true&scenarios_not_containing=repull&origins=pullwarden",
                                   "startup=true&origins=cscli"])
def test_packed_and_one_by_one_say_the_same(query):
    entries = bans()
    f = filtered(query)
    packed = decisions(new_bans(Entries.build(entries.values()), f, NOW, group=100))
    one_by_one = decisions(_new_bans_of(entries.values(), f, NOW, 100))
    assert sorted(packed, key=json.dumps) == sorted(one_by_one, key=json.dumps)
    if query == "startup=true":
        assert len(packed) == sum(not k.startswith("asn:") for k in entries) and {d["scope"] for d in packed} == {
            "Ip", "Range"}


def test_a_value_that_needs_escaping_is_escaped():
    entries = {k: e for k, e in bans().items() if k.startswith("ip:10.0.0.")}
    odd = 'ip:10.0.0.1"\\\u00e9'
    entries[odd] = Entry(odd, 77, "2026-11-28T00:00:00", "hand", 'ru"le')
    out = decisions(new_bans(Entries.build(entries.values()), filtered("startup=true"), NOW))
    assert {d["value"]: d["scenario"] for d in out}['10.0.0.1"\\\u00e9'] == 'ru"le'
    assert len(out) == len(entries)

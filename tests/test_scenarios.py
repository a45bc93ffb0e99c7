"""The labelled traffic generator (tests/scenarios.py): its lines ingest cleanly, its ground truth matches them."""
from __future__ import annotations

import ipaddress
import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.conftest import write
from tests.scenarios import (ABUSIVE_KINDS, CI_STORM_INTERVAL_MIN, ERROR_STORM_MIN_ERRORS, KINDS, asn_networks,
                             generate)

SCALE = 0.2
START = datetime(2024, 11, 18, tzinfo=timezone.utc)


@lru_cache(maxsize=None)
def scenario(seed: int = 1, scale: float = SCALE, kinds: frozenset | None = None):
    return generate(days=1, start=START, seed=seed, scale=scale, kinds=set(kinds) if kinds else None)


def ci_storm_min_runs(scale: float, days: int = 1) -> int:
    """Runs of one ci-storm actor that surely start inside the span, less one its end may cut short."""
    lo, hi = CI_STORM_INTERVAL_MIN
    intensity = scale / max(1, round(scale))
    return math.floor((days * 1440 - lo / intensity) / (hi / intensity))


def test_lines_ingest_and_match_the_ground_truth(run, workdir):
    lines, actors = scenario()
    asn_db = workdir / "asn.mmdb"
    w = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    for cidr, record in asn_networks().items():
        w.insert_network(IPSet([cidr]), record)
    w.to_db_file(str(asn_db))

    r = run(format="main", asn_db=str(asn_db))
    report = r.ingest(write(workdir / "s.log", lines))
    assert report.total("rejects") == 0
    assert report.total("events") == len(lines)
    lo, hi = r.store.execute("select min(ts), max(ts) from events")[0]
    assert START.replace(tzinfo=None) <= lo and hi < START.replace(tzinfo=None) + timedelta(days=1)

    seen = {ip for (ip,) in r.store.execute("select distinct client_ip from events")}
    asn_of = dict(r.store.execute("select ip, asn from ip_info"))
    for a in actors:
        assert a.addresses and set(a.addresses) <= seen, a.name
        assert {asn_of[ip] for ip in a.addresses} == {a.asn}, a.name
    owners = Counter(ip for a in actors for ip in a.addresses)
    assert max(owners.values()) == 1                                   # no address is shared by two actors
    assert seen == set(owners)                                         # and every client is someone's

    # the CI storm fetches every blob on every run: > 30 a day at scale 1, proportionally fewer here
    (ci,) = [a for a in actors if a.kind == "ci-storm"]
    per_digest = [n for (n,) in r.store.execute(
        "select count(*) from events where client_ip = ? and kind = 'blob' group by digest", [ci.addresses[0]])]
    assert ci_storm_min_runs(1.0) > 30
    assert per_digest and min(per_digest) >= ci_storm_min_runs(SCALE)

    # the error storm keeps its defining > 150 errors a day even at a small scale
    (storm,) = [a for a in actors if a.kind == "error-storm"]
    errors = r.store.value("select count(*) from events where client_ip = ? and status in (404, 429)",
                           [storm.addresses[0]])
    assert errors >= ERROR_STORM_MIN_ERRORS > 150


def test_labels_and_prefixes():
    _lines, actors = scenario()
    assert {a.kind for a in actors} == set(KINDS)
    assert all(a.abusive == (a.kind in ABUSIVE_KINDS) for a in actors)
    prefixed = [a for a in actors if a.prefix]
    assert {a.kind for a in prefixed} == {"rotation-v4", "rotation-v6", "privacy-v6", "light"}
    for a in prefixed:
        net = ipaddress.ip_network(a.prefix)
        assert all(ipaddress.ip_address(ip) in net for ip in a.addresses), a.name
    by_kind = {a.kind: a for a in prefixed if a.kind != "light"}
    assert by_kind["rotation-v6"].prefix != by_kind["privacy-v6"].prefix
    assert len(by_kind["rotation-v4"].addresses) >= 40 and len(by_kind["rotation-v6"].addresses) >= 40
    assert len(by_kind["privacy-v6"].addresses) >= 2
    (neighbour,) = [a for a in prefixed if a.kind == "light"]       # the one light user inside the rotation /24
    assert neighbour.prefix == by_kind["rotation-v4"].prefix
    assert len({a.prefix for a in prefixed}) == len(prefixed) - 1


def test_generation_is_deterministic_and_kinds_are_independent():
    lines, actors = scenario()
    again = generate(days=1, start=START, seed=1, scale=SCALE)
    assert again == (lines, actors)
    other, _ = scenario(seed=2)
    assert other != lines
    only, only_actors = scenario(kinds=frozenset({"ci-storm", "office-nat"}))
    mine = {ip for a in only_actors for ip in a.addresses}
    assert only == [line for line in lines if line.split(" ", 1)[0] in mine]

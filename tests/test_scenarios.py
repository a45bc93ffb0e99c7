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
from tests.scenarios import (ABUSIVE_KINDS, CI_STORM_INTERVAL_MIN, ERROR_STORM_MIN_ERRORS, KINDS,
                             SMALL_RESELLER_MIN_PULLS, asn_networks, generate)

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


def test_clf_is_the_same_requests_without_user_agent_referer_or_forwarded_for():
    lines, actors = scenario()
    clf, clf_actors = generate(days=1, start=START, seed=1, scale=SCALE, fmt="clf")
    assert clf_actors == actors and len(clf) == len(lines)
    for main, short in zip(lines, clf):          # main: the clf line, then "referer" "user agent" "forwarded-for"
        assert main.startswith(short.replace(" HTTP/2.0\"", " HTTP/1.1\"") + ' "-" "'), (main, short)
        assert short.count('"') == 2


def test_the_resellers_that_a_user_agent_does_not_give_away(run, workdir):
    """The generic-library reseller sends one user agent and forwards on part of its requests; the
    small one keeps a few hundred pulls a day (never fewer than SMALL_RESELLER_MIN_PULLS) round the
    clock on a hosting network."""
    lines, actors = scenario(scale=0.2, kinds=frozenset({"lib-reseller", "small-reseller"}))
    r = run(format="main")
    r.ingest(write(workdir / "r.log", lines))
    (lib,) = [a for a in actors if a.kind == "lib-reseller"]
    (small,) = [a for a in actors if a.kind == "small-reseller"]
    uas, with_xff, total = r.store.execute("""select count(distinct user_agent), count(forwarded_for), count(*)
                                              from events where client_ip = ?""", [lib.addresses[0]])[0]
    assert uas == 1 and 0.1 < with_xff / total < 0.7
    pulls, hours = r.store.execute("""select count(*) filter (where kind = 'ping'), count(distinct hour(ts))
                                      from events where client_ip = ?""", [small.addresses[0]])[0]   # GET /v2/
    assert pulls >= SMALL_RESELLER_MIN_PULLS * 0.9 and hours == 24 and small.asn in (14061, 24940)


def test_the_shapes_of_issue_21(run, workdir):
    """What defines each new kind holds in its lines: the cache reseller asks manifests for every
    pull but downloads each blob once, round the clock; the office-hours reseller works a day on a
    hosting network; the CI runner pulls one image of several GiB in separate runs, tens of GiB a
    weekday; the CI fleet re-downloads the company's few images; the campus has every client kind;
    the replicator syncs at night, each blob once; the CGNAT carries dozens of clients."""
    kinds = frozenset({"cache-reseller", "office-reseller", "ci-bigimage", "ci-fleet", "campus-nat", "replicator",
                       "cgnat"})
    lines, actors = scenario(scale=0.3, kinds=kinds)
    r = run(format="main")
    r.ingest(write(workdir / "n.log", lines))
    by = {a.kind: a for a in actors}
    assert {a.kind for a in actors} == set(kinds) and all(len(a.addresses) == 1 for a in actors)

    def one(sql, kind):
        return r.store.execute(sql, [by[kind].addresses[0]])[0]
    manifests, images, blobs, digests, hours = one("""
        select count(*) filter (where kind = 'manifest'), count(distinct repository),
               count(*) filter (where kind = 'blob'), count(distinct digest), count(distinct hour(ts))
        from events where client_ip = ?""", "cache-reseller")
    assert blobs == digests and manifests > 4 * images and hours == 24
    assert by["office-reseller"].asn in (14061, 24940)
    hours = one("select count(distinct hour(ts)) from events where client_ip = ? and kind = 'manifest'",
                "office-reseller")[0]
    assert 8 <= hours <= 13
    images, big, runs, nbytes = one("""
        select count(distinct repository), max(bytes), max(n), sum(bytes)
        from (select repository, digest, bytes, count(*) over (partition by digest) as n from events
              where client_ip = ? and kind = 'blob')""", "ci-bigimage")
    assert images <= 2 and big >= 0.8e9 and runs >= 3 and nbytes >= 20e9
    images, per_blob = one("""select count(distinct repository), count(*) / count(distinct digest)
                              from events where client_ip = ? and kind = 'blob'""", "ci-fleet")
    assert images <= 30 and per_blob > 5
    families = {ua.split("/")[0] for (ua,) in r.store.execute(
        "select distinct user_agent from events where client_ip = ?", [by["campus-nat"].addresses[0]])}
    assert {"docker", "containerd", "containers", "skopeo", "buildkit"} <= families
    blobs, digests, hours = one("""select count(*) filter (where kind = 'blob'), count(distinct digest),
                                          count(distinct hour(ts)) from events where client_ip = ?""", "replicator")
    assert blobs == digests and hours <= 3
    assert len({ua for (ua,) in r.store.execute("select distinct user_agent from events where client_ip = ?",
                                                [by["cgnat"].addresses[0]])}) >= 15

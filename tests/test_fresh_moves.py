"""Findings that arise without the entity's own traffic are a fresh pass's too, not left to the
next full pass (detect_interval): a window's end passing an hour (its oldest events leave and a
share rises), a neighbour moving its ASN's fair share. And the incremental pass decides what a
full pass decides on the same data."""
from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest

from core.settings import load
from core.store import open_store
from enforcer import jobs
from enforcer.service import Services
from rules.detect import Fresh, detect, events_top, objects_top
from rules.engine import load_rules
from tests.detect_helpers import add_events, ev, storm
from tests.enforcer_helpers import NOW, Clock, append, in_thread, tailing
from tests.conftest import write
from tests.test_freshness import line
from tests.test_enrich import build
from tests.test_object_join import PROXY, T0, UA, digest, download, objgen

# one address taking three addresses' worth of its network's bytes: its share of the ASN's bytes
# times the ASN's active addresses (what the fair_share feature was until issue 21 removed it,
# no rule using it); both read the ASN's traffic, so a neighbour moves them
FAIR = """name: test-fair
description: one address taking many addresses' worth of its network's bytes
entity: address
window: 24h
where: bytes >= 10 * 1024^3 and asn_share * asn_addresses >= 3
action: ban
duration: 1h
reason: "{bytes:gib} GiB, {asn_share:pct} of its network's bytes among {asn_addresses:int} addresses"
cases:
  - {expect: match, features: {bytes: 10737418240, asn_share: 0.5, asn_addresses: 6}}
  - {expect: no-match, features: {bytes: 10737418240, asn_share: 0.5, asn_addresses: 5}}
"""


def test_serve_bans_when_a_window_end_raises_an_error_share_without_a_new_event(tmp_path):
    # error-storm (48h: errors > 100 and error_share >= 0.3): 300 good requests in the window's
    # first hour keep 101 errors at 25%; when the hour turns they leave the window and the
    # address is 100% errors, with no event of its own, nor anyone's: the fresh pass that
    # follows the hour judges it, not the full pass up to detect_interval later
    with tailing(tmp_path, Clock()) as live:
        ip = "198.51.100.77"
        start = NOW - timedelta(hours=47)                # the 48h window's first hour at NOW
        append(live.log, [line(start + timedelta(minutes=10, seconds=i), ip, "/v2/library/python/manifests/3.12")
                          for i in range(300)]
               + [line(NOW - timedelta(hours=2, seconds=-i), ip, f"/v2/library/nope{i}/manifests/latest", status=404)
                  for i in range(101)])
        in_thread(lambda: jobs.ingest(live))
        first = in_thread(lambda: jobs.detection(live))
        assert not [d for d in first.new if not d.simulated]            # 25% errors: nothing
        live.clock.advance(minutes=40)
        assert in_thread(lambda: jobs.fresh_detection(live)) is None      # nothing moved
        live.clock.advance(minutes=30)                                  # 13:10: the hour of 11:00 two days ago left
        result = in_thread(lambda: jobs.fresh_detection(live))
        assert result is not None and live.passes.last["kind"] == "fresh"
        assert [(d.rule, d.value) for d in result.new if not d.simulated] == [("error-storm", ip)]
        assert live.publisher.current.content["bans"].get(f"ip:{ip}") is not None


def test_a_fresh_pass_judges_the_addresses_whose_fair_share_a_neighbour_moved(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "fair.yml").write_text(FAIR)
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    rules = load_rules(store, [str(tmp_path / "rules")])
    # two heavy addresses of one network: each is its network's average (fair share 1)
    add_events(store, [ev(NOW - timedelta(hours=3, minutes=i), ip, nbytes=1 << 30, digest=f"sha256:{i:02d}")
                       for ip in ("192.0.2.1", "192.0.2.2") for i in range(12)])
    store.execute("insert into ip_info select distinct client_ip, 64500, 'EXAMPLE', 'DE' from events")
    assert not detect(store, cfg, rules, NOW).findings
    upto = events_top(store)
    # eight light neighbours arrive: the network's average address falls to a fifth of them
    light = [f"192.0.2.{k}" for k in range(10, 18)]
    add_events(store, [ev(NOW + timedelta(minutes=5), ip, "manifest", nbytes=1500) for ip in light])
    store.execute("insert into ip_info select unnest($1::varchar[]), 64500, 'EXAMPLE', 'DE'", [light])
    now = NOW + timedelta(minutes=6)
    fresh = detect(store, cfg, rules, now, write=False, fresh=Fresh(upto, events_top(store), NOW, last=NOW))
    full = detect(store, cfg, rules, now, write=False)
    assert sorted(f.entity for f in fresh.findings) == ["192.0.2.1", "192.0.2.2"]
    assert sorted(d.value for d in fresh.new) == sorted(d.value for d in full.new) == ["192.0.2.1", "192.0.2.2"]
    assert not fresh.held
    store.close()


def test_an_hourly_incremental_pass_decides_what_a_full_pass_decides(tmp_path):
    # a day of traffic under the default pack, then one more hour: the incremental pass (new
    # events' entities, the hour that left each window, the neighbours) against a full pass at
    # the same time on a copy of the same data: the same findings for everyone it judges, and
    # every new decision of the full pass, none more (the full pass's findings also hold the
    # episodes that go on, which the incremental pass leaves to it)
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    rules = load_rules(store)
    t0 = NOW - timedelta(hours=30)
    rows = storm("203.0.113.7", start=t0, hours=30) + storm("203.0.113.8", start=t0, hours=14)
    rows += [ev(NOW - timedelta(hours=24, minutes=-20, seconds=-i), "198.51.100.77", "manifest", nbytes=1500)
             for i in range(300)]                          # leaves the 24h window in the new hour
    rows += [ev(NOW - timedelta(hours=2, seconds=-i), "198.51.100.77", "tags", status=404, repo=f"r{i}")
             for i in range(160)]
    rows += [ev(t0 + timedelta(hours=h, minutes=3 * k), f"192.0.2.{k}", "manifest", nbytes=1500)
             for h in range(30) for k in range(20)]
    add_events(store, rows)
    store.execute("insert into ip_info select distinct client_ip, 64500, 'EXAMPLE', 'DE' from events")
    detect(store, cfg, rules, NOW - timedelta(minutes=1))
    upto = events_top(store)
    add_events(store, storm("203.0.113.8", start=NOW, hours=1)
               + [ev(NOW + timedelta(minutes=2), "192.0.2.99", "tags", status=404, repo=f"s{i}") for i in range(60)])
    store.close()
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes((tmp_path / "db.duckdb").read_bytes())

    now = NOW + timedelta(minutes=30)
    store = open_store(cfg.db)
    fresh = detect(store, cfg, rules, now, fresh=Fresh(upto, events_top(store), NOW - timedelta(minutes=1),
                                                       last=NOW - timedelta(minutes=1)))
    store.close()
    store = open_store(str(copy))
    full = detect(store, cfg, rules, now)
    store.close()

    def key(f):
        return f.rule.name, f.entity, f.reason, json.dumps(f.features, sort_keys=True, default=str)
    assert {key(f) for f in fresh.findings} <= {key(f) for f in full.findings}     # same numbers
    assert sorted((d.rule, d.value) for d in fresh.new) == sorted((d.rule, d.value) for d in full.new)
    assert ("tag-scanner", "198.51.100.77") in {(d.rule, d.value) for d in fresh.new}   # by the window's end


# a share of the whole mirror's bytes, as heavy-user reads it, with small numbers
SHARE = """name: test-share
description: most of the mirror's bytes
entity: address
window: 24h
where: bytes >= 1024^3 and byte_share >= 0.5
action: ban
duration: 1h
reason: "{bytes:gib} GiB, {byte_share:pct} of the mirror's bytes"
cases:
  - {expect: match, features: {bytes: 1073741824, byte_share: 0.5}}
  - {expect: no-match, features: {bytes: 1073741824, byte_share: 0.49}}
"""


def test_a_fresh_pass_judges_an_address_whose_share_of_the_mirror_rose_when_others_bytes_left(tmp_path):
    # 192.0.2.1 took 2 GiB three hours ago: 40% of the mirror's bytes while six neighbours'
    # 3 GiB of 22 hours ago are in the window. When the hour turns those leave it and the
    # address holds the mirror's whole traffic, with no event of its own, nor in the hour that
    # left: only the mirror's total moved
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "share.yml").write_text(SHARE)
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    rules = load_rules(store, [str(tmp_path / "rules")])
    add_events(store, [ev(NOW - timedelta(hours=3, minutes=i), "192.0.2.1", nbytes=1 << 29, digest=f"sha256:{i}")
                       for i in range(4)]
                 + [ev(NOW - timedelta(hours=22, minutes=30 + i), f"198.51.100.{i}", nbytes=1 << 29,
                       digest=f"sha256:{i}") for i in range(6)])
    last = NOW + timedelta(minutes=50)
    assert not detect(store, cfg, rules, last).findings
    upto = events_top(store)
    add_events(store, [ev(NOW + timedelta(hours=1, minutes=5), "203.0.113.5", "manifest", nbytes=1500)])
    now = NOW + timedelta(hours=1, minutes=10)
    fresh = detect(store, cfg, rules, now, write=False, fresh=Fresh(upto, events_top(store), last, last=last))
    full = detect(store, cfg, rules, now, write=False)
    assert sorted(d.value for d in fresh.new) == sorted(d.value for d in full.new) == ["192.0.2.1"]
    store.close()


@pytest.fixture
def geo(tmp_path):
    """A reseller's network and its customers' (another ASN)."""
    return str(build(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "203.0.113.0/24": {"autonomous_system_number": 64510, "autonomous_system_organization": "RESELL-CLOUD"},
        "192.0.2.0/24": {"autonomous_system_number": 64520, "autonomous_system_organization": "CUSTOMERS"},
    }))


def test_a_fresh_pass_judges_the_client_whose_handed_on_links_the_store_s_late_log_shows(run, workdir, geo):
    # a reseller's twelve 307s are judged when they arrive: nothing yet. The object store's log,
    # delivered later, shows the twelve signed links fetched by addresses of another network:
    # redirect-relay. The reseller has no new event; its downloads are new object-store rows,
    # and the fresh pass after them judges it, as a full pass would
    asker = "203.0.113.5"
    asks = [PROXY.format(ip=asker, t=T0 + timedelta(seconds=n), d=digest(100 + n), status=307, n=300, ua=UA)
            for n in range(12)]
    fetched = [download(T0 + timedelta(seconds=n + 2), f"192.0.2.{10 + n}", asker, digest(100 + n), 5_000_000)
               for n in range(12)]
    r = run(asn_db=geo)
    r.ingest(write(workdir / "proxy" / "access.log", asks))
    rules = load_rules(r.store)
    now = T0.replace(tzinfo=None) + timedelta(minutes=30)
    assert not [f for f in detect(r.store, r.cfg, rules, now).findings if f.rule.name == "redirect-relay"]
    upto, objects = events_top(r.store), objects_top(r.store)
    r.ingest(write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-CCCC",
                   objgen.s3_lines(random.Random(4), fetched, damaged=False)))
    assert events_top(r.store) == upto                       # no event of the reseller's, nor anyone's
    later = now + timedelta(minutes=20)
    fresh = detect(r.store, r.cfg, rules, later, write=False,
                   fresh=Fresh(upto, upto, now, last=now, objects_after=objects, objects_upto=objects_top(r.store)))
    full = detect(r.store, r.cfg, rules, later, write=False)
    assert ("redirect-relay", asker) in {(d.rule, d.value) for d in fresh.new}
    assert sorted((d.rule, d.value) for d in fresh.new) == sorted((d.rule, d.value) for d in full.new)


def test_serve_runs_a_fresh_pass_when_only_the_object_store_s_log_moved(tmp_path, geo):
    # the same in serve: the store's log arrives in a folder it tails, no proxy line comes with
    # it, and the fresh pass after that ingest judges the reseller (before, "nothing new")
    asker = "203.0.113.5"
    proxy, store_logs = tmp_path / "access.log", tmp_path / "s3"
    store_logs.mkdir()
    proxy.write_text("".join(PROXY.format(ip=asker, t=T0 + timedelta(seconds=n), d=digest(100 + n), status=307,
                                          n=300, ua=UA) + "\n" for n in range(12)))
    cfg = load(None, {"db": str(tmp_path / "db.duckdb"), "sources": [str(proxy), str(store_logs)],
                      "asn_db": geo}, environ={})
    store = open_store(cfg.db)
    jobs.configure_store(store, cfg)
    live = Services(store, cfg, clock=Clock(T0.replace(tzinfo=None) + timedelta(minutes=30)))
    try:
        in_thread(lambda: jobs.ingest(live))
        in_thread(lambda: jobs.detection(live))
        live.clock.advance(minutes=10)
        assert in_thread(lambda: jobs.fresh_detection(live)) is None      # nothing moved
        write(store_logs / "2024-11-20-10-00-00-CCCC", objgen.s3_lines(random.Random(4), [
            download(T0 + timedelta(seconds=n + 2), f"192.0.2.{10 + n}", asker, digest(100 + n), 5_000_000)
            for n in range(12)], damaged=False))
        in_thread(lambda: jobs.ingest(live))
        live.clock.advance(minutes=1)
        result = in_thread(lambda: jobs.fresh_detection(live))
        assert result is not None and live.passes.last["kind"] == "fresh"
        assert ("redirect-relay", asker) in {(d.rule, d.value) for d in result.new}
    finally:
        store.close()

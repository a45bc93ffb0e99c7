"""Findings that arise without the entity's own traffic are a fresh pass's too, not left to the
next full pass (detect_interval): a window's end passing an hour (its oldest events leave and a
share rises), a neighbour moving its ASN's fair share. And the incremental pass decides what a
full pass decides on the same data."""
from __future__ import annotations

import json
from datetime import timedelta

from core.settings import load
from core.store import open_store
from enforcer import jobs
from rules.detect import Fresh, detect, events_top
from rules.engine import load_rules
from tests.detect_helpers import add_events, ev, storm
from tests.enforcer_helpers import NOW, Clock, append, in_thread, tailing
from tests.test_freshness import line

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

"""A decision within a minute of the evidence: after an ingest run that stored events, a fresh
pass judges the entities they belong to, and the ban or throttle is in the policy long before
the next full pass (detect_interval)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from click.testing import CliRunner

from core.settings import load
from core.store import open_store
from enforcer import jobs
from rules.detect import Fresh, detect, events_top
from rules.engine import load_rules
from tests.detect_helpers import add_events, ev, storm
from tests.enforcer_helpers import NOW, Clock, append, free_port, in_thread, tailing

STAMP = "%d/%b/%Y:%H:%M:%S +0000"


def line(t: datetime, ip: str, path: str, status: int = 200, nbytes: int = 1500, ua: str = "docker/27.3.1") -> str:
    return f'{ip} - - [{t.strftime(STAMP)}] "GET {path} HTTP/1.1" {status} {nbytes} "-" "{ua}"'


def pull(t: datetime, ip: str, blobs: int = 3) -> list[str]:
    """A pull without a layer cache: the manifest, then every blob."""
    out = [line(t, ip, "/v2/library/python/manifests/3.12")]
    out += [line(t + timedelta(seconds=1 + b), ip, f"/v2/library/python/blobs/sha256:{b:064x}", nbytes=30 << 20)
            for b in range(blobs)]
    return out


def enumeration(t: datetime, ip: str, n: int) -> str:
    """The scanner's n-th tags list, of a repository nobody pulls."""
    return line(t, ip, f"/v2/scan{n}/app/tags/list", status=404, nbytes=19, ua="Go-http-client/1.1")


@pytest.fixture
def live(tmp_path):
    """serve's services at default settings, tailing a log, with a clock the test moves."""
    with tailing(tmp_path, Clock()) as s:
        yield s


def test_a_ci_storm_is_throttled_by_the_fresh_pass_after_the_pull_that_crosses_its_thresholds(live):
    # 11 hours of a CI job re-pulling without cache, replayed relative to the injected clock:
    # blob_hours is 11, ci-repull-storm wants 12
    ip = "198.51.100.23"
    append(live.log, [x for h in range(11, 0, -1) for k in range(4)
                      for x in pull(NOW - timedelta(hours=h) + timedelta(minutes=15 * k), ip)])
    in_thread(lambda: jobs.ingest(live))
    in_thread(lambda: jobs.detection(live))                          # the full pass after the start
    assert f"ip:{ip}" not in live.publisher.current.content["assignments"]
    assert in_thread(lambda: jobs.fresh_detection(live)) is None     # nothing stored since that pass

    live.clock.advance(minutes=5)
    crossing = live.clock() - timedelta(seconds=10)
    append(live.log, pull(crossing, ip))                               # the pull of the 12th hour
    cycles = 0
    while f"ip:{ip}" not in live.publisher.current.content["assignments"] and cycles < 5:
        live.clock.advance(seconds=live.settings.ingest_interval)
        in_thread(lambda: jobs.ingest(live))
        in_thread(lambda: jobs.fresh_detection(live))
        cycles += 1
    print(f"\nCI storm: throttled after {cycles} ingest + fresh-pass cycle(s) "
          f"(<= {live.settings.ingest_interval + live.settings.detect_fresh_interval:.0f} s of schedule)")
    entry = live.publisher.current.content["assignments"][f"ip:{ip}"]
    assert cycles == 1 and entry.rule == "ci-repull-storm" and entry.effect == "throttle"
    assert live.passes.last["kind"] == "fresh" and live.passes.newest == crossing + timedelta(seconds=3)


def test_a_fresh_pass_finds_what_a_full_pass_finds_for_the_entities_it_judges(tmp_path):
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    rules = load_rules(store)
    now = NOW + timedelta(minutes=30)
    add_events(store, storm("203.0.113.7", start=NOW - timedelta(hours=20), hours=20)
               + storm("203.0.113.8", start=NOW - timedelta(hours=20), hours=20)
               + [ev(NOW - timedelta(hours=2), "192.0.2.9", "tags", status=404, repo=f"r{i}") for i in range(49)])
    # one AS for all of them: the ASN's totals (fair share) come from its other addresses too
    store.execute("insert into ip_info select distinct client_ip, 64500, 'EXAMPLE', 'DE' from events")
    detect(store, cfg, rules, now - timedelta(minutes=20))
    upto = events_top(store)
    # new events for two of them: one more storm hour, and the scanner's 50th tags list
    add_events(store, storm("203.0.113.7", start=NOW, hours=1)
               + [ev(NOW + timedelta(minutes=1), "192.0.2.9", "tags", status=404, repo="r49")])
    fresh = detect(store, cfg, rules, now, write=False, fresh=Fresh(upto, events_top(store), now - timedelta(minutes=20)))
    full = detect(store, cfg, rules, now, write=False)

    def key(f):
        return f.rule.name, f.entity, f.reason, json.dumps(f.features, sort_keys=True, default=str)
    judged = {"203.0.113.7", "192.0.2.9", "203.0.113.0/24", "192.0.2.0/24", "docker.io/library/python",
              "docker.io/r49", "64500"}
    assert {key(f) for f in fresh.findings} == {key(f) for f in full.findings if f.entity in judged}
    assert any(f.entity == "203.0.113.8" for f in full.findings)              # not judged: no new events
    assert {d.value for d in fresh.new} == {"192.0.2.9"}                     # the new ban; the storms' throttles
    assert not fresh.extended                                                # in force are the full pass's to extend
    store.close()


def test_a_fresh_pass_filters_inside_every_scan_of_the_rollups():
    # on the outer select alone the filter does not reach the CTEs DuckDB materializes (5.2 s
    # instead of 0.7 s for a fresh pass on 2 M events): judging_only must find the scans
    from rules import features
    from rules.detect import judging_only
    for entity in features.ENTITIES:
        sql = judging_only(features.features_sql(entity), entity)
        assert sql.count("in (select entity from judged)") >= 2, entity     # the facts scan at least, and outer


def test_a_fresh_pass_leaves_a_rule_past_the_breaker_floor_to_the_full_pass(tmp_path):
    # scanners arriving a few at a time: fresh passes may ban breaker_floor (5) of one rule's
    # between two full passes; beyond that the full pass, whose breaker sees them all, judges
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    rules = load_rules(store)
    detect(store, cfg, rules, NOW)

    def scanners(first: int, minute: int) -> Fresh:
        upto = events_top(store)
        add_events(store, [ev(NOW + timedelta(minutes=minute, seconds=i), f"192.0.2.{s}", "tags", status=404,
                              repo=f"r{i}") for s in range(first, first + 3) for i in range(50)])
        return Fresh(upto, events_top(store), NOW)
    first = detect(store, cfg, rules, NOW + timedelta(minutes=1), fresh=scanners(1, 0))
    assert len(first.new) == 3 and not any(d.held for d in first.new)
    second = detect(store, cfg, rules, NOW + timedelta(minutes=2), fresh=scanners(4, 1))
    assert len(second.findings) == 3 and not second.new and not second.held
    assert store.value("select count(*) from decisions") == 3
    full = detect(store, cfg, rules, NOW + timedelta(minutes=5))
    assert sorted(d.value for d in full.new) == ["192.0.2.4", "192.0.2.5", "192.0.2.6"]
    store.close()


def test_the_full_pass_breaker_counts_the_bans_of_the_fresh_passes_since_the_last_full_pass(live):
    # five scanners banned by a fresh pass use up tag-scanner's allowance of the interval
    # (breaker_floor 5 of a few active addresses); five more found by the next full pass would be
    # twice the allowance in one interval if that pass judged its own new bans alone: it holds them
    def scanners(first: int) -> list[str]:
        t = live.clock() - timedelta(minutes=2)
        return [enumeration(t + timedelta(seconds=i), f"192.0.2.{s}", i) for s in range(first, first + 5)
                for i in range(1, 51)]
    in_thread(lambda: jobs.detection(live))                          # the full pass after the start
    live.clock.advance(minutes=1)
    append(live.log, scanners(1))
    in_thread(lambda: jobs.ingest(live))
    fresh = in_thread(lambda: jobs.fresh_detection(live))
    assert len(fresh.new) == 5 and not any(d.held for d in fresh.new)
    live.clock.advance(minutes=1)
    append(live.log, scanners(6))
    in_thread(lambda: jobs.ingest(live))
    live.clock.advance(minutes=3)
    full = in_thread(lambda: jobs.detection(live))
    assert live.passes.last["kind"] == "full"
    assert {d.value for d in full.new} == {f"192.0.2.{s}" for s in range(6, 11)}
    assert all(d.held for d in full.new) and "5 its fresh passes banned" in full.held[0].reason
    assert live.store.value("select count(*) from decisions where held is null") == 5
    # the next interval starts afresh: a fresh pass after this full pass counts from it
    assert live.passes.full_at == live.clock()


def test_the_breaker_interval_survives_a_restart_of_serve(tmp_path):
    # the same interval as above, with serve restarted between the fresh passes and the full pass:
    # the restarted serve must still count the 5 bans of the fresh passes since the last full
    # pass before it, and from that pass (not from the last fresh pass, which ran later)
    clock = Clock()

    def scanners(first: int) -> list[str]:
        t = clock() - timedelta(minutes=2)
        return [enumeration(t + timedelta(seconds=i), f"192.0.2.{s}", i) for s in range(first, first + 5)
                for i in range(1, 51)]
    with tailing(tmp_path, clock) as s:
        in_thread(lambda: jobs.detection(s))                         # the full pass after the start
        clock.advance(minutes=1)
        append(s.log, scanners(1))
        in_thread(lambda: jobs.ingest(s))
        assert len(in_thread(lambda: jobs.fresh_detection(s)).new) == 5
        clock.advance(minutes=1)
        append(s.log, pull(clock() - timedelta(seconds=30), "203.0.113.40"))     # a later fresh pass, no ban
        in_thread(lambda: jobs.ingest(s))
        assert not in_thread(lambda: jobs.fresh_detection(s)).new
        s.save_cursors()
    clock.advance(minutes=1)
    with tailing(tmp_path, clock) as s:                              # the restarted serve, same file
        append(s.log, scanners(6))
        in_thread(lambda: jobs.ingest(s))
        clock.advance(minutes=2)
        full = in_thread(lambda: jobs.detection(s))
        assert {d.value for d in full.new} == {f"192.0.2.{x}" for x in range(6, 11)}
        assert all(d.held for d in full.new) and "5 its fresh passes banned" in full.held[0].reason
        assert s.store.value("select count(*) from decisions where held is null and effect = 'ban'") == 5


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def test_serve_bans_a_scanner_within_a_minute_of_its_50th_enumeration(workdir):
    (workdir / "logs").mkdir()
    log = workdir / "logs" / "access.log"
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    # background: people pulling over the last hours
    append(log, [x for i in range(40) for x in pull(now - timedelta(minutes=5 * i), f"203.0.113.{i + 10}")])
    port = free_port()
    (workdir / "pullwarden.toml").write_text(f'sources = ["logs"]\nport = {port}\n')     # defaults otherwise
    runner = CliRunner()
    key = json.loads(runner.invoke(cli(), ["keys", "create", "--role", "proxy", "--name", "edge", "--json"]).stdout)["key"]
    viewer = json.loads(runner.invoke(cli(), ["keys", "create", "--role", "viewer", "--name", "v", "--json"]).stdout)["key"]
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, ip = f"http://127.0.0.1:{port}", "192.0.2.66"

    def judged_up_to() -> float:
        try:
            return metric(httpx.get(url + "/metrics", headers={"X-Api-Key": viewer}, timeout=2).text,
                          "pullwarden_detection_newest_event_timestamp_seconds")
        except httpx.TransportError:
            return float("nan")

    def banned() -> bool:
        return f"ip:{ip}" in httpx.get(url + "/v1/policy", headers={"X-Api-Key": key}, timeout=5).json()["bans"]
    try:
        t = datetime.now(timezone.utc).replace(tzinfo=None)
        append(log, [enumeration(t, ip, n) for n in range(1, 50)])
        deadline = time.time() + 45
        while not judged_up_to() >= t.replace(tzinfo=timezone.utc).timestamp():
            assert time.time() < deadline and proc.poll() is None, "the 49 enumerations were not judged"
            time.sleep(0.3)
        assert not banned()                                       # 49: not yet a scanner

        written = time.time()
        append(log, [enumeration(datetime.now(timezone.utc).replace(tzinfo=None), ip, 50)])
        while not banned():
            assert time.time() - written < 60 and proc.poll() is None, "no ban within 60 s of the 50th"
            time.sleep(0.2)
        took = time.time() - written
        print(f"\nscanner: banned {took:.1f} s after its 50th enumeration was written (target 60 s)")
        lag = metric(httpx.get(url + "/metrics", headers={"X-Api-Key": viewer}).text,
                     "pullwarden_detection_lag_seconds")
        assert took < 60 and 0 <= lag < 60
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cli():
    from cli.main import cli as command
    return command


def test_the_cli_full_pass_counts_the_fresh_passes_bans_since_the_last_full_pass(workdir):
    # serve's fresh passes banned 5 scanners (tag-scanner's allowance, breaker_floor 5) since its
    # last full pass; then serve is stopped and the operator runs `pullwarden detect` on the file:
    # that full pass must count those 5, as serve's own full pass does, and hold 5 more
    from tests.test_cli import invoke
    cfg = load(None, {}, environ={})
    store = open_store(cfg.db)
    rules = load_rules(store)
    detect(store, cfg, rules, NOW)

    def scanners(first: int, minute: int) -> None:
        add_events(store, [ev(NOW + timedelta(minutes=minute, seconds=i), f"192.0.2.{s}", "tags", status=404,
                              repo=f"r{i}") for s in range(first, first + 5) for i in range(50)])
    upto = events_top(store)
    scanners(1, 0)
    fresh = detect(store, cfg, rules, NOW + timedelta(minutes=1), fresh=Fresh(upto, events_top(store), NOW))
    assert len(fresh.new) == 5 and not any(d.held for d in fresh.new)
    scanners(6, 1)
    store.close()
    res = invoke("detect", "--json", "--now", (NOW + timedelta(minutes=5)).isoformat())
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {d["value"] for d in out["new"]} == {f"192.0.2.{s}" for s in range(6, 11)}
    assert out["summary"]["new"]["held"] == 5 and "5 its fresh passes banned" in out["held"][0]["reason"]

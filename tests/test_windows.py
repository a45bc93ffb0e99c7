"""Byte windows (issue 20 §3): a tier's `window_bytes` per `window_seconds` is enforced by serve
from the log, for every proxy: an address over its tier's window is banned until the window
ends, with the numbers, and nginx's include, CRProxy's block list, the CrowdSec stream and
/v1/check all refuse it. Before, no dialect did: a tier of 1 MiB an hour served 10 × 1 MiB."""
from __future__ import annotations

import gzip
import json
import time
from datetime import datetime, timedelta

import httpx
import pytest

from enforcer import changes, jobs, render, windows
from tests.enforcer_helpers import Clock, append, in_thread, serving, tailing

STAMP = "%d/%b/%Y:%H:%M:%S +0000"
MIB, GIB = 1 << 20, 1 << 30
NOW = datetime(2026, 11, 27, 12, 30)        # inside the window 12:00-13:00 (and 12:00-14:00)


def line(t: datetime, ip: str, n: int, nbytes: int) -> str:
    return (f'{ip} - - [{t.strftime(STAMP)}] "GET /v2/docker.io/library/python/blobs/sha256:{n:064x} HTTP/1.1" '
            f'200 {nbytes} "-" "docker/27.3.1"')


@pytest.fixture
def live(tmp_path):
    """serve's services at default settings, tailing a log, with a clock the test moves."""
    with tailing(tmp_path, Clock(NOW)) as s:
        yield s


def assign(s, ip: str, tier: str) -> None:
    with s.lock:
        changes.add_decision(s.store, "test", "ip", ip, "throttle", "7d", "test", s.clock(), tier=tier)
    s.publisher.publish()


def policy(s) -> dict:
    return json.loads(gzip.decompress(s.publisher.current.body))


def look(s, counted: windows.Counted) -> list:
    in_thread(lambda: jobs.ingest(s))
    return in_thread(lambda: windows.enforce(s, counted))


def test_an_address_over_its_tiers_window_is_refused_by_every_dialect_until_the_window_ends(live):
    with live.lock:
        changes.set_tier(live.store, "test", "small", {"window_bytes": MIB, "window_seconds": 3600}, "test", NOW)
    assign(live, "203.0.113.5", "small")
    assign(live, "203.0.113.6", "small")
    counted = windows.Counted()
    t = NOW - timedelta(minutes=20)
    # 203.0.113.5: 10 x 1 MiB in the window (and 5 MiB in the hour before, another window);
    # 203.0.113.6: under its MiB
    append(live.log, [line(t - timedelta(hours=1), "203.0.113.5", n, MIB) for n in range(5)])
    append(live.log, [line(t + timedelta(seconds=n), "203.0.113.5", n, MIB) for n in range(10)])
    append(live.log, [line(t, "203.0.113.6", 1, MIB // 2)])
    made = look(live, counted)
    assert [(d.value, d.until) for d in made] == [("203.0.113.5", datetime(2026, 11, 27, 13, 0))]
    assert made[0].reason == ("10.0 MiB in the 1 h window from 12:00 UTC, over tier small's 1.0 MiB: "
                              "refused until 13:00 UTC")
    p = policy(live)
    assert p["bans"]["ip:203.0.113.5"]["rule"] == "byte-window"
    files = render.render(p, warn=lambda m: None)
    assert "    203.0.113.5/32 banned;" in files["nginx-pullwarden-http.conf"]
    assert files["block-ips.csv"].startswith('203.0.113.5,"10.0 MiB in the 1 h window')
    assert "203.0.113.6" not in files["block-ips.csv"]
    # nothing new: no second look at the same events; the same window never bans twice
    assert look(live, counted) == []
    append(live.log, [line(t + timedelta(minutes=1), "203.0.113.5", 99, MIB)])
    assert look(live, counted) == []
    # the window's end lifts it (the ban runs out), and the next window counts from nought
    live.clock.advance(minutes=31)
    live.publisher.refresh()
    assert "ip:203.0.113.5" not in policy(live)["bans"]
    append(live.log, [line(live.clock(), "203.0.113.5", 100, MIB // 2)])
    assert look(live, counted) == []


def test_the_stock_throttled_tier_and_an_admin_unban(live):
    """The stock throttled tier's 2 GiB per 2 h; an admin who lifts the ban is not overruled in
    that window."""
    assign(live, "198.51.100.7", "throttled")
    counted = windows.Counted()
    append(live.log, [line(NOW - timedelta(minutes=25) + timedelta(seconds=n), "198.51.100.7", n, 512 * MIB)
                      for n in range(5)])
    made = look(live, counted)
    assert len(made) == 1 and made[0].until == datetime(2026, 11, 27, 14, 0)
    assert "2.5 GiB in the 2 h window from 12:00 UTC, over tier throttled's 2.0 GiB" in made[0].reason
    with live.lock:
        changes.revoke(live.store, "admin", made[0].id, "a customer", NOW)
    live.publisher.publish()
    append(live.log, [line(NOW, "198.51.100.7", 9, 512 * MIB)])
    assert look(live, counted) == []


def test_ordinary_pulls_at_the_default_tiers_are_never_refused(live):
    """The anonymous tier's window (20 GiB per 2 h) is far above a pull: ten cold pulls of a
    1.5 GiB image from one address in the window are not refused; an allowlisted address is
    never counted."""
    counted = windows.Counted()
    pulls = [line(NOW - timedelta(minutes=29) + timedelta(seconds=10 * n), "192.0.2.10", n, 500 * MIB)
             for n in range(30)]
    with live.lock:
        changes.allow(live.store, "test", "ip", "192.0.2.20", "our CI", NOW)
    live.publisher.publish()
    heavy = [line(NOW - timedelta(minutes=29) + timedelta(seconds=n), "192.0.2.20", n, GIB) for n in range(25)]
    append(live.log, pulls + heavy)
    assert look(live, counted) == []
    assert policy(live)["bans"] == {}


def test_a_window_in_a_real_serve_how_soon_after_the_crossing_line(workdir):
    """`pullwarden serve` at default settings tailing a log: the time from the line that crosses
    the window to the ban in the published policy (what every proxy's agent or bouncer reads)."""
    log = workdir / "access.log"
    log.write_text("")
    (workdir / "pullwarden.toml").write_text(f'sources = ["{log}"]\n')
    from click.testing import CliRunner

    from cli.main import cli
    admin = json.loads(CliRunner().invoke(cli, ["keys", "create", "--role", "admin", "--name", "ops", "--json"])
                       .output.strip().splitlines()[-1])["key"]
    with serving(workdir) as url:
        h = {"X-Api-Key": admin}
        assert httpx.put(url + "/v1/admin/tiers/small", headers=h,
                         json={"window_bytes": MIB, "window_seconds": 3600, "reason": "test"}).status_code == 200
        assert httpx.post(url + "/v1/admin/assignments", headers=h, json={
            "scope": "ip", "value": "203.0.113.5", "tier": "small", "duration": "1d", "reason": "test"}).status_code == 201
        now = datetime.utcnow()
        append(log, [line(now, "203.0.113.5", n, MIB // 4) for n in range(4)])     # exactly its MiB
        deadline = time.monotonic() + 30            # an ingest run (every 10 s) has stored them: at, not over
        while "pullwarden_ingest_lag_seconds NaN" in httpx.get(url + "/metrics", headers=h).text:
            assert time.monotonic() < deadline, "the lines were not ingested within 30 s"
            time.sleep(0.2)
        time.sleep(1)                               # and the windows job has looked at them
        assert "ip:203.0.113.5" not in httpx.get(url + "/v1/policy", headers=h).json()["bans"]
        append(log, [line(datetime.utcnow(), "203.0.113.5", 9, 1)])                 # one byte more
        crossing = time.monotonic()
        deadline = crossing + 40
        while "ip:203.0.113.5" not in httpx.get(url + "/v1/policy", headers=h).json()["bans"]:
            assert time.monotonic() < deadline, "not banned within 40 s"
            time.sleep(0.2)
        took = time.monotonic() - crossing
        print(f"\nbyte window: banned in the policy {took:.1f} s after the crossing line "
              "(ingest_interval 10 s + detect_fresh_interval 5 s)")
        assert took <= 10 + 5 + 5
        check = httpx.get(url + "/v1/check", headers=h, params={"ip": "203.0.113.5"}).json()
        assert not check["allowed"] and "over tier small's 1.0 MiB" in check["why"][0]


def test_a_redirecting_mirrors_bytes_are_counted_where_they_are_downloaded(live):
    """With a blob cache the mirror answers 307 and the bytes leave the object store: its access
    log (object_events) is counted for the address that downloaded them."""
    assign(live, "203.0.113.8", "throttled")
    counted = windows.Counted()
    append(live.log, [line(NOW - timedelta(minutes=5), "203.0.113.8", 1, 900)])       # the 307's few bytes
    with live.lock:
        live.store.execute("""insert into object_events (ts, client_ip, source, bytes, file_id)
                              select ?, '203.0.113.8', 's3', ?, 0 from range(3)""",
                           [NOW - timedelta(minutes=4), GIB])
    made = look(live, counted)
    assert [d.value for d in made] == ["203.0.113.8"] and made[0].evidence["bytes"] == 3 * GIB + 900


def test_the_mirror_s_own_listings_are_no_client_s_bytes(tmp_path):
    """CRProxy's storage driver lists the bucket (ListObjects, max-keys=1) before every redirect,
    from the mirror's own address: those answers are no download, and never a window's bytes."""
    from core.store import open_store
    s = open_store(str(tmp_path / "w.duckdb"))
    s.execute("""insert into object_events (ts, client_ip, source, operation, method, status, bytes, file_id)
                 select ?, '10.20.0.5', 's3', 'REST.GET.BUCKET', 'GET', 200, 600, 0 from range(1000)
                 union all select ?, '203.0.113.8', 's3', 'REST.GET.OBJECT', 'GET', 200, 5000, 0""",
              [NOW - timedelta(minutes=4), NOW - timedelta(minutes=3)])
    assert windows.totals(s, NOW - timedelta(hours=1), NOW, windows.Counted(), 0) == {"203.0.113.8": 5000}
    s.close()

"""The budget: month boundaries in the report time zone, the projection on known series, the
guard's levels, its webhook (a real local HTTP server) and the anonymous tier's tightening."""
from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from core.store import open_store
from reports import budget
from rules.rollup import roll_up
from tests.detect_helpers import add_events, ev

TIB = 1 << 40
GIB = 1 << 30


def day_events(days: dict[date, int], ip="198.51.100.1", hour=12, user=None):
    """One blob download per day of the given size, at ``hour`` UTC."""
    return [ev(datetime(d.year, d.month, d.day, hour), ip, nbytes=b, user=user) for d, b in days.items()]


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "b.duckdb"))
    yield s
    s.close()


def fill(store, rows, budget_tib=None):
    add_events(store, rows)
    roll_up(store)
    if budget_tib is not None:
        store.execute("update kv set value = ? where key = 'monthly_budget_tib'", [str(budget_tib)])


def test_month_bounds_follow_the_time_zone_and_daylight_saving():
    berlin = budget.zone("Europe/Berlin")
    assert budget.month_bounds("2026-10", berlin) == (datetime(2026, 9, 30, 22), datetime(2026, 10, 31, 23))
    assert budget.month_bounds("2026-12", budget.zone("UTC")) == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    assert budget.month_of(datetime(2026, 10, 31, 23, 30), berlin) == "2026-11"
    assert budget.previous_month("2026-01") == "2025-12"
    with pytest.raises(ValueError):
        budget.zone("Mars/Olympus")


def test_linear_and_day_of_week_projection_on_a_known_series():
    # four weeks of history: weekdays 10 GiB, weekends 2 GiB; today (a Monday) half gone
    today = date(2026, 11, 16)          # Monday
    history = {today - timedelta(days=k): (2 if (today - timedelta(days=k)).weekday() >= 5 else 10) * GIB
               for k in range(1, 29)}
    rest = [today + timedelta(days=k) for k in range(1, 15)]     # to Nov 30
    used = 150 * GIB
    p = budget.project(used, 5 * GIB, history, today, 0.5, rest, month_gone=15.5 / 30)
    assert p.linear == round(used / (15.5 / 30))
    # the rest of today: half of a Monday; then 10 weekdays and 4 weekend days
    assert p.weekday == used + 5 * GIB + 10 * 10 * GIB + 4 * 2 * GIB
    assert p.headline == "weekday" and p.projected == p.weekday
    sd = (sum((v - sum(history.values()) / 28) ** 2 for v in history.values()) / 28) ** 0.5
    assert p.high == round(max(p.linear, p.weekday) + sd * 14.5 ** 0.5)
    assert p.low == round(min(p.linear, p.weekday) - sd * 14.5 ** 0.5)


def test_status_month_to_date_today_and_guard(store):
    nov = {date(2026, 11, d): 2 * TIB for d in range(1, 11)}     # 20 TiB in the first 10 days
    oct_ = {date(2026, 10, d): TIB for d in range(20, 32)}
    fill(store, day_events({**oct_, **nov}), budget_tib=45)
    s = budget.status(store, "UTC")
    assert s["month"] == "2026-11" and s["as_of"] == datetime(2026, 11, 10, 13)
    assert s["used_bytes"] == 20 * TIB == store.value(
        "select sum(bytes) from events where ts >= '2026-11-01' and ts < '2026-12-01'")
    assert s["today"] == "2026-11-10" and s["today_bytes"] == 2 * TIB
    assert s["budget_bytes"] == 45 * TIB and s["days_in_month"] == 30 and s["partial"]
    assert s["projection"]["linear"] == round(20 * TIB / ((9 * 24 + 13) / 720))
    assert s["projected_bytes"] == s["projection"]["weekday"] > 45 * TIB
    assert s["guard"]["crossed"] == ["projected"] and s["guard"]["level"] == "projected"
    left = (datetime(2026, 12, 1) - datetime(2026, 11, 10, 13)) / timedelta(days=1)
    assert s["allowed_bytes_per_day"] == int(25 * TIB / left)
    assert 0 < s["days_until_exhausted"] < left and s["exhausted_on"] < "2026-12-01"
    assert s["budget_tib"] == 45 and s["bytes"] == 20 * TIB          # the first endpoint's keys
    # in Tokyo (UTC+9) Nov 1 began at Oct 31 15:00 UTC: Oct 31 12:00 UTC is still October
    tokyo = budget.status(store, "Asia/Tokyo")
    assert tokyo["used_bytes"] == 20 * TIB and tokyo["timezone"] == "Asia/Tokyo"
    la = budget.status(store, "America/Los_Angeles")       # Nov 1 12:00 UTC is Nov 1 04:00 there
    assert la["used_bytes"] == 20 * TIB
    closed = budget.status(store, "UTC", month="2026-10")
    assert not closed["partial"] and closed["used_bytes"] == closed["projected_bytes"] == 12 * TIB


def test_guard_levels():
    b = 100
    assert budget.levels(10, 90, b)["level"] == "ok"
    assert budget.levels(50, 90, b)["crossed"] == ["50%"]
    assert budget.levels(85, 99, b)["level"] == "80%"
    assert budget.levels(30, 120, b)["level"] == "projected"
    assert budget.levels(100, 130, b)["crossed"] == ["50%", "80%", "projected", "100%"]
    assert budget.levels(100, 130, b)["level"] == "100%"


class Hook:
    """A real local HTTP server that records the JSON POSTed to it (and can refuse)."""

    def __init__(self, status=200):
        self.calls, self.status = [], status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def api(tmp_path):
    from tests.enforcer_helpers import Enforcer
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def set_cfg(api, **kw):
    api.cfg.values.update(kw)


def month_of_traffic(api, per_day_tib: float, days=10, budget_tib=45):
    """Ten days of November 2026 at per_day_tib a day; the clock at the end of the tenth."""
    with api.services.lock:
        fill(api.store, day_events({date(2026, 11, d): int(per_day_tib * TIB) for d in range(1, days + 1)}),
             budget_tib=budget_tib)
    api.clock.t = datetime(2026, 11, days, 23, 59)


def test_guard_webhook_once_per_level_and_simulated_tightening(api):
    from enforcer import budget_guard
    hook = Hook()
    try:
        set_cfg(api, budget_webhook=hook.url)
        assert api_get(api, "/healthz").json()["budget"]["level"] == "unknown"
        month_of_traffic(api, 2.0)            # 20 TiB of 45 after 10 days: projection ~60 TiB, under 50% used
        budget_guard.check(api.services)
        assert [c["level"] for c in hook.calls] == ["projected"]
        call = hook.calls[0]
        assert call["month"] == "2026-11" and call["used_bytes"] == 20 * TIB and call["budget_bytes"] == 45 * TIB
        assert call["action"]["what"] == "tighten" and call["action"]["simulated"] is True
        assert call["action"]["tier"] == "heavy" and call["action"]["previous"] == "anonymous"
        budget_guard.check(api.services)                      # nothing new: nothing posted again
        assert len(hook.calls) == 1
        with api.services.lock:                               # simulated: nothing changed
            assert api.store.value("select value from kv where key = 'anonymous_tier'") == "anonymous"
        with api.services.lock:                               # two more days: 24 TiB, past 50%
            fill(api.store, day_events({date(2026, 11, 11): 2 * TIB, date(2026, 11, 12): 2 * TIB}))
        api.clock.t = datetime(2026, 11, 12, 23, 59)
        budget_guard.check(api.services)
        assert [c["level"] for c in hook.calls] == ["projected", "50%"]
        health = api_get(api, "/healthz").json()
        assert health["status"] == "ok" and health["budget"]["level"] == "projected"
        assert health["budget"]["crossed"] == ["50%", "projected"]
        metrics = api_get(api, "/metrics", "viewer").text
        assert f"pullwarden_budget_bytes {45 * TIB}" in metrics and f"pullwarden_month_bytes {24 * TIB}" in metrics
        assert "pullwarden_budget_guard_level 3" in metrics and "pullwarden_projected_bytes " in metrics
        b = api_get(api, "/v1/stats/budget", "viewer").json()
        assert b["guard"]["notified"] == ["projected", "50%"] and b["guard"]["actions"][0]["simulated"] is True
    finally:
        hook.close()


def test_a_failing_webhook_is_tried_again(api):
    from enforcer import budget_guard
    hook = Hook(status=500)
    try:
        set_cfg(api, budget_webhook=hook.url)
        month_of_traffic(api, 2.0)
        budget_guard.check(api.services)
        budget_guard.check(api.services)
        assert [c["level"] for c in hook.calls] == ["projected", "projected"]
        hook.status = 204
        budget_guard.check(api.services)
        budget_guard.check(api.services)
        assert len(hook.calls) == 3
    finally:
        hook.close()


def test_tightening_applies_the_tier_audited_and_restores_it_next_month(api):
    from enforcer import budget_guard
    set_cfg(api, budget_tighten=True, budget_tighten_tier="throttled")
    month_of_traffic(api, 2.0)
    v = api.services.publisher.current.version
    budget_guard.check(api.services)
    with api.services.lock:
        assert api.store.value("select value from kv where key = 'anonymous_tier'") == "throttled"
        actor, action, reason = api.store.execute("select actor, action, reason from audit order by ts desc limit 1")[0]
    assert (actor, action) == ("budget-guard", "set default tiers") and "projected" in reason
    assert api.services.publisher.current.version > v
    assert api_get(api, "/v1/check?ip=192.0.2.1", "proxy").json()["tier"] == "throttled"
    budget_guard.check(api.services)                          # once
    with api.services.lock:
        assert api.store.value("select count(*) from audit where actor = 'budget-guard'") == 1
    with api.services.lock:                                   # December begins quietly
        fill(api.store, day_events({date(2026, 12, 1): TIB // 100}))
    api.clock.t = datetime(2026, 12, 1, 23, 59)
    budget_guard.check(api.services)
    with api.services.lock:
        assert api.store.value("select value from kv where key = 'anonymous_tier'") == "anonymous"
        assert api.store.value("select count(*) from audit where actor = 'budget-guard'") == 2


def test_budget_endpoints_need_a_viewer_key(api):
    month_of_traffic(api, 1.0)
    for path in ("/v1/stats/budget", "/v1/stats/budget/whatif?window_gib=1", "/v1/stats/reports",
                 "/v1/stats/reports/2026-11.json"):
        assert api_get(api, path, "proxy").status_code == 403, path
    b = api_get(api, "/v1/stats/budget", "viewer").json()
    assert b["month"] == "2026-11" and b["used_bytes"] == 10 * TIB and b["timezone"] == "UTC"
    assert set(b["projection"]) >= {"linear", "weekday", "low", "high", "method"}
    assert b["days_in_month"] == 30 and b["allowed_bytes_per_day"] > 0
    w = api_get(api, "/v1/stats/budget/whatif?window_gib=1&window_seconds=7200", "viewer").json()
    assert w["anonymous_bytes"] == 10 * TIB and w["anonymous_bytes_after"] == 10 * GIB   # one pull a day, capped
    assert w["projected_bytes_after"] < w["projected_bytes"]
    assert api_get(api, "/v1/stats/budget/whatif?tier=throttled", "viewer").json()["limits"]["window_bytes"] == 2 * GIB
    assert api_get(api, "/v1/stats/budget/whatif?tier=nope", "viewer").status_code == 404
    r = api_get(api, "/v1/stats/reports/2026-11.pdf", "viewer")
    assert r.status_code == 200 and r.content.startswith(b"%PDF") and r.headers["x-report-partial"] == "true"
    assert api_get(api, "/v1/stats/reports", "viewer").json()[0]["month"] == "2026-11"


def api_get(api, path, role=None):
    return httpx.get(api.url + path, headers=api.headers(role) if role else {}, timeout=60)


def test_serve_schedules_the_guard_and_the_report_of_the_1st(api):
    from enforcer import budget_guard, jobs
    set_cfg(api, report_timezone="Europe/Berlin")
    scheduler = jobs.start(api.services)
    try:
        assert scheduler.get_job("budget").trigger.interval.total_seconds() == 300
        trigger = scheduler.get_job("report").trigger
        assert str(trigger.timezone) == "Europe/Berlin"
        assert trigger.get_next_fire_time(None, datetime(2026, 11, 20, tzinfo=trigger.timezone)).isoformat() == \
            "2026-12-01T01:05:00+01:00"
    finally:
        scheduler.shutdown(wait=True)
    with api.services.lock:
        fill(api.store, day_events({date(2026, 11, d): GIB for d in range(1, 31)}))
    api.clock.t = datetime(2026, 12, 1, 0, 5)            # 01:05 in Berlin
    assert budget_guard.monthly_report(api.services) == "2026-11"
    with api.services.lock:
        (j,) = api.store.execute("select json from reports where month = '2026-11' and timezone = 'Europe/Berlin'")[0]
    assert json.loads(j)["total_bytes"] == 30 * GIB and not json.loads(j)["partial"]


def test_a_mirror_far_below_its_budget_is_not_exhausted_this_month(store):
    # a new mirror's first few hundred KiB: at that pace the stock 100 TiB last millions of
    # days, a date past the calendar's end, which failed serve's budget job at every check
    fill(store, day_events({date(2026, 11, 10): 300 << 10}))
    s = budget.status(store, "UTC")
    assert s["days_until_exhausted"] > 1e6 and s["exhausted_on"] is None

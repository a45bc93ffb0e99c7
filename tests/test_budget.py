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
from tests.detect_helpers import add_events, ev, settings

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

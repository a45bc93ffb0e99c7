"""The monthly TiB budget: month boundaries in the report time zone, bytes month to date and
today, the projection to the month's end, and the guard's levels.

Everything is in event time: "now" is the end of the newest rolled-up hour (a replay of old
logs shows its own month), never later than the ``now`` a caller passes. Days and months
begin at local midnight in ``report_timezone``; the hourly roll-up is cut at whole UTC hours,
so in a zone with a half-hour offset an hour counts in the local day in which it begins.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIB = 1 << 40
HISTORY_DAYS = 28          # the day-of-week projection looks back four weeks
MIN_WEEKDAY_HISTORY = 7    # fewer complete days than this: the linear pace is the headline
LEVELS = ("ok", "50%", "80%", "projected", "100%")     # the guard's levels, by severity

METHOD = ("linear: bytes so far divided by the share of the month's hours gone. day-of-week: each remaining "
          "day gets the mean of the complete days of the same weekday in the last 4 weeks (any day's mean when "
          "that weekday has none yet), the rest of today its share of today's. band: from the lower to the "
          "higher of the two, widened by the standard deviation of the daily totals of the last 4 weeks times "
          "the square root of the days left (days taken as independent, about a 68% band). The headline is "
          "day-of-week once 7 complete days are known, linear before.")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (report_timezone: an IANA name like Europe/Berlin)") from None


def utc(local: datetime) -> datetime:
    """A zone-aware local time as naive UTC, the way every table stores time."""
    return local.astimezone(timezone.utc).replace(tzinfo=None)


def local(t: datetime, tz: ZoneInfo) -> datetime:
    return t.replace(tzinfo=timezone.utc).astimezone(tz)


def parse_month(text: str) -> tuple[int, int]:
    try:
        d = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise ValueError(f"not a month: {text!r} (YYYY-MM, e.g. 2026-11)") from None
    return d.year, d.month


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The month's first and last instant (exclusive) as naive UTC."""
    y, m = parse_month(month)
    nxt = (y + 1, 1) if m == 12 else (y, m + 1)
    return (utc(datetime(y, m, 1, tzinfo=tz)), utc(datetime(*nxt, 1, tzinfo=tz)))


def month_of(t: datetime, tz: ZoneInfo) -> str:
    """The local month an instant (naive UTC) falls in."""
    return f"{local(t, tz):%Y-%m}"


def previous_month(month: str) -> str:
    y, m = parse_month(month)
    return f"{y - 1}-12" if m == 1 else f"{y}-{m - 1:02d}"


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    nxt = day + timedelta(days=1)
    return (utc(datetime(day.year, day.month, day.day, tzinfo=tz)), utc(datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)))


def daily_bytes(store, start: datetime, end: datetime, tz: ZoneInfo) -> dict[date, int]:
    """Bytes per local day of the hours in [start, end) (naive UTC)."""
    rows = store.execute("""
        select timezone($tz, hour::timestamptz)::date as day, sum(b)::hugeint
        from (select hour, sum(bytes) as b from facts_hourly where hour >= $lo and hour < $hi group by 1)
        group by 1""", {"tz": tz.key, "lo": start, "hi": end})     # hours first: a zone per hour, not per row
    return {d: int(b or 0) for d, b in rows}


def budget_bytes(store) -> int:
    return int(round(float(store.value("select value from kv where key = 'monthly_budget_tib'") or 0) * TIB))


@dataclass
class Projection:
    linear: int
    weekday: int
    low: int
    high: int
    headline: str            # which of the two is projected_bytes

    @property
    def projected(self) -> int:
        return self.weekday if self.headline == "weekday" else self.linear

    def as_dict(self) -> dict:
        return {"linear": self.linear, "weekday": self.weekday, "low": self.low, "high": self.high,
                "headline": self.headline, "method": METHOD}


def project(used: int, today_bytes: int, history: dict[date, int], today: date, today_gone: float,
            rest: list[date], month_gone: float) -> Projection:
    """The month's end from what is known. ``history``: complete days' totals (last 4 weeks, any
    month); ``today_gone``: the share of today gone; ``rest``: the month's days after today;
    ``month_gone``: the share of the month's hours gone."""
    linear = round(used / month_gone) if month_gone > 0 else used
    by_weekday: dict[int, list[int]] = {}
    for d, b in history.items():
        by_weekday.setdefault(d.weekday(), []).append(b)
    overall = statistics.fmean(history.values()) if history else (
        (linear - used) / (len(rest) + 1 - today_gone) if rest or today_gone < 1 else 0)

    def expect(d: date) -> float:
        same = by_weekday.get(d.weekday())
        return statistics.fmean(same) if same else overall

    weekday = round(used + (1 - today_gone) * expect(today) + sum(expect(d) for d in rest))
    left = len(rest) + (1 - today_gone)
    spread = (statistics.pstdev(history.values()) if len(history) >= 2 else 0.0) * left ** 0.5
    low = max(used, round(min(linear, weekday) - spread))
    high = round(max(linear, weekday) + spread)
    return Projection(linear, weekday, low, high, "weekday" if len(history) >= MIN_WEEKDAY_HISTORY else "linear")


def latest_hour_end(store) -> datetime | None:
    latest = store.value("select max(hour) from facts_hourly")
    return latest + timedelta(hours=1) if latest is not None else None


def status(store, tz_name: str = "UTC", now: datetime | None = None, month: str | None = None) -> dict:
    """The budget's state for ``month`` (default: the month of the newest data, in event time)."""
    tz = zone(tz_name)
    budget = budget_bytes(store)
    as_of = latest_hour_end(store)
    if as_of is not None and now is not None:
        as_of = min(as_of, now)
    if month is None:
        if as_of is None:
            return empty(tz, budget)
        month = month_of(as_of - timedelta(microseconds=1), tz)
    start, end = month_bounds(month, tz)
    if as_of is None or as_of >= end or (now is not None and now >= end):
        as_of = end                     # a month that is over is whole, whatever the newest data
    else:
        as_of = max(as_of, start)
    first_day = local(start, tz).date()
    days = [first_day + timedelta(days=k) for k in range((local(end, tz).date() - first_day).days)]
    today = local(max(as_of - timedelta(microseconds=1), start), tz).date()
    t0, t1 = day_bounds(today, tz)
    lookback = min(start, utc(datetime(today.year, today.month, today.day, tzinfo=tz)
                              - timedelta(days=HISTORY_DAYS)))
    daily = daily_bytes(store, lookback, as_of, tz)
    used = sum(b for d, b in daily.items() if d >= first_day)
    today_bytes = daily.get(today, 0)
    known = [d for d in daily if d < today]
    history = {}
    if known:       # complete days from the first one with data: a mirror started last week has no zeros before
        d = min(known)
        while d < today:
            if d >= today - timedelta(days=HISTORY_DAYS):
                history[d] = daily.get(d, 0)
            d += timedelta(days=1)
    today_gone = (as_of - t0) / (t1 - t0)
    month_gone = (as_of - start) / (end - start)
    partial = as_of < end
    proj = project(used, today_bytes, history, today, today_gone, [d for d in days if d > today], month_gone)
    projected = proj.projected if partial else used
    left_days = (end - as_of) / timedelta(days=1)
    future = projected - used
    if used >= budget:
        until = 0.0
    elif future > 0 and left_days > 0:
        until = (budget - used) / (future / left_days)
    else:
        until = None            # at this pace, not this month
    guard = levels(used, projected if partial else used, budget)
    return {
        "month": month, "timezone": tz.key, "start": start, "end": end, "as_of": as_of, "partial": partial,
        "budget_bytes": budget, "used_bytes": used, "today": today.isoformat(), "today_bytes": today_bytes,
        "days_in_month": len(days), "days_elapsed": round(month_gone * len(days), 3),
        "projected_bytes": projected,
        "projection": {**proj.as_dict(), **({} if partial else {"linear": used, "weekday": used, "low": used,
                                                                 "high": used})},
        "days_until_exhausted": None if until is None else round(until, 2),
        # compared in days first: a trickle against a big budget lasts past the calendar's end
        "exhausted_on": (local(as_of + timedelta(days=until), tz).date().isoformat()
                         if until is not None and until < left_days else None),
        "allowed_bytes_per_day": int(max(0, budget - used) / left_days) if left_days > 0 else 0,
        "daily": [{"day": d.isoformat(), "bytes": daily.get(d, 0)} for d in days if d <= today],
        "guard": guard,
        # the keys of the first /v1/stats/budget
        "bytes": used, "tib": used / TIB, "budget_tib": budget / TIB, "projected_tib": projected / TIB,
    }


def empty(tz: ZoneInfo, budget: int) -> dict:
    """No data yet: the budget, and nothing used."""
    return {"month": None, "timezone": tz.key, "start": None, "end": None, "as_of": None, "partial": True,
            "budget_bytes": budget, "used_bytes": 0, "today": None, "today_bytes": 0, "days_in_month": 0,
            "days_elapsed": 0, "projected_bytes": 0,
            "projection": {"linear": 0, "weekday": 0, "low": 0, "high": 0, "headline": "linear", "method": METHOD},
            "days_until_exhausted": None, "exhausted_on": None, "allowed_bytes_per_day": 0, "daily": [],
            "guard": levels(0, 0, budget), "bytes": 0, "tib": 0.0, "budget_tib": budget / TIB, "projected_tib": 0.0}


def levels(used: int, projected: int, budget: int) -> dict:
    """The guard: which of 50%, 80%, 100% of the budget are reached, and whether the projection
    crosses it. ``level`` is the most severe (LEVELS order: ok < 50% < 80% < projected < 100%):
    a projection over the budget needs acting on before 100% is there."""
    crossed = []
    if budget > 0:
        crossed += [name for name, share in (("50%", 0.5), ("80%", 0.8)) if used >= share * budget]
        if projected > budget:
            crossed.append("projected")
        if used >= budget:
            crossed.append("100%")
    level = max((LEVELS.index(c) for c in crossed), default=0)
    return {"level": LEVELS[level], "level_index": level, "crossed": crossed,
            "used_share": round(used / budget, 4) if budget else None,
            "projected_share": round(projected / budget, 4) if budget else None}

"""One clock. Live work (serve, the API, the command line against a live database,
revocations, the audit log) reads the wall clock; replaying old logs is explicit: the `now`
setting (`--now`, PULLWARDEN_NOW, or `now = ...` in pullwarden.toml) pins one time that every
command of the replay uses, so `detect`, `decisions list --active`, revocations and audit
rows agree."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

LATEST = "latest"


def utcnow() -> datetime:
    """The wall clock as naive UTC, the way every table stores time."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as naive UTC (a time without offset is taken as UTC)."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2024-11-20T12:00 or 2024-11-20T12:00+08:00)") from None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def resolve(setting: str, store=None) -> datetime:
    """The `now` of this run: the wall clock when the setting is empty, the newest ingested
    event for "latest" (a replay of logs read from the past), else the ISO time given."""
    if not setting:
        return utcnow()
    if setting.strip() == LATEST:
        latest = store.value("select max(ts) from events") if store is not None else None
        if latest is None:
            raise ValueError("now = latest, but no events have been ingested yet")
        return latest
    return parse_time(setting)


# How far a pinned `now` may run ahead of the wall clock: two hosts' clocks a little apart.
AHEAD = timedelta(minutes=5)


def enforceable(now: datetime, wall: datetime | None = None) -> datetime:
    """``now``, for work that writes what a live serve enforces (a ban, an assignment, any
    admin change, detection's decisions); ValueError when it is more than AHEAD past the wall
    clock. serve enforces at the wall clock whatever `now` a decision was made at: one made in
    2030 "for 1h" would be in force at once until 2030, and not among the active decisions a
    listing at the wall clock shows."""
    wall = wall or utcnow()
    if now - wall > AHEAD:
        ahead = now - wall
        span = f"{ahead.days} day(s)" if ahead.days else f"{ahead.seconds // 60} minutes"
        raise ValueError(f"now = {now:%Y-%m-%d %H:%M} is {span} ahead of the wall clock ({wall:%Y-%m-%d %H:%M} "
                         f"UTC): what is written at that time would be enforced by serve at once, until then; a "
                         f"replay's `now` (--now, PULLWARDEN_NOW, now = in pullwarden.toml) is at most "
                         f"{AHEAD.seconds // 60} minutes ahead: unset it to act now")
    return now


def is_replay(setting: str) -> bool:
    return bool(setting)


class Simulated:
    """A clock that reads ``start`` at the wall-clock instant ``origin`` (Unix seconds) and runs
    ``rate`` times faster than the wall clock: `pullwarden serve --clock-start`, for soak tests
    and demos that need days to pass in minutes (bench/soak.py). A log writer that knows the
    same three numbers stamps its lines with the same time. Never for a live mirror: detection,
    expiries, the audit log and retention all follow it."""

    def __init__(self, start: datetime, rate: float = 1.0, origin: float | None = None):
        if rate <= 0:
            raise ValueError(f"the clock's rate must be above 0, not {rate}")
        self.start, self.rate = start, float(rate)
        self.origin = time.time() if origin is None else float(origin)

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.origin) * self.rate)

"""One clock. Live work (serve, the API, the command line against a live database,
revocations, the audit log) reads the wall clock; replaying old logs is explicit: the `now`
setting (`--now`, PULLWARDEN_NOW, or `now = ...` in pullwarden.toml) pins one time that every
command of the replay uses, so `detect`, `decisions list --active`, revocations and audit
rows agree."""
from __future__ import annotations

from datetime import datetime, timezone

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


def is_replay(setting: str) -> bool:
    return bool(setting)

"""Times as a person reads them: to the second, in the operator's report_timezone, with the
zone's abbreviation. Every table stores naive UTC and the machine-readable outputs (--json, the
API) keep ISO 8601 UTC; only what is printed or drawn for people goes through here."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None) -> ZoneInfo:
    """The zone, or UTC when the name is empty or unknown (a display must not fail on it;
    settings that cut months by it refuse a bad name where they are read)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def human(t: datetime | str | None, tz_name: str | None = "UTC") -> str:
    """``t`` (naive UTC, aware, or an ISO 8601 string as the API gives it) as
    ``2026-12-06 23:39:42 CET``; empty for None or an empty string, the text itself when it is
    not a time."""
    if t is None or t == "":
        return ""
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    local = t.astimezone(zone(tz_name))
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"

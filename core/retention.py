"""What pullwarden keeps, and for how long: findings, decisions that ended, and the log of
ingest runs and detection passes, for `keep_days` before this run's `now` (the wall clock
live; a replay's pinned time, so that logs read from the past are not thrown away as old
news). Events, roll-ups and the audit log are kept whole."""
from __future__ import annotations

from datetime import datetime, timedelta

MIN_DAYS = 8        # recidive looks at the decisions of the 7 days before a pass


def prune(store, keep_days: int, now: datetime) -> dict[str, int]:
    """Delete what is older than the cutoff, in one transaction; returns rows deleted per table."""
    cutoff = now - timedelta(days=max(int(keep_days), MIN_DAYS))
    done = {}
    store.execute("begin")
    try:
        done["findings"] = store.value("delete from findings where coalesce(last_seen, now) < ?", [cutoff])
        done["decisions"] = store.value("delete from decisions where coalesce(revoked_at, until) < ?", [cutoff])
        done["ingest_runs"] = store.value("delete from ingest_runs where started_at < ?", [cutoff])
        done["detect_runs"] = store.value("delete from detect_runs where ran_at < ?", [cutoff])
        store.execute("commit")
    except BaseException:
        store.execute("rollback")
        raise
    return done

"""What pullwarden keeps, and for how long. Findings and decisions that ended are kept for
`keep_days` of event time: the newest event's clock, not the wall clock's, so that logs read
from the past are not thrown away as old news. The log of ingest runs and detection passes
is kept for `keep_days` of wall-clock time. Events, roll-ups and the audit log are kept whole."""
from __future__ import annotations

from datetime import datetime, timedelta

MIN_DAYS = 8        # recidive looks at the decisions of the 7 days before a pass


def prune(store, keep_days: int, wall_now: datetime) -> dict[str, int]:
    """Delete what is older than the cutoffs, in one transaction; returns rows deleted per table."""
    days = timedelta(days=max(int(keep_days), MIN_DAYS))
    latest = store.value("select max(ts) from events")
    done = {"findings": 0, "decisions": 0, "ingest_runs": 0, "detect_runs": 0}
    store.execute("begin")
    try:
        if latest is not None:
            cutoff = latest - days
            done["findings"] = store.value("delete from findings where now < ?", [cutoff])
            done["decisions"] = store.value("delete from decisions where coalesce(revoked_at, until) < ?", [cutoff])
        done["ingest_runs"] = store.value("delete from ingest_runs where started_at < ?", [wall_now - days])
        done["detect_runs"] = store.value("delete from detect_runs where ran_at < ?", [wall_now - days])
        store.execute("commit")
    except BaseException:
        store.execute("rollback")
        raise
    return done

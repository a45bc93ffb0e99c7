"""What pullwarden keeps, and for how long: findings, decisions that ended, and the log of
ingest runs and detection passes, for `keep_days` before this run's `now`; raw events (events,
object_events, proxy_events) for `keep_events_days`; the hourly roll-ups for
`keep_rollups_days`. `now` is the wall clock live and a replay's pinned time, so that logs
read from the past are not thrown away as old news. Frozen reports and the audit log are kept
whole. The monthly report and the dashboard read the roll-ups, so a month whose events are
gone still has its report, and a month whose roll-ups are gone has its frozen one."""
from __future__ import annotations

from datetime import datetime, timedelta

from core.store import quote_ident

MIN_DAYS = 8        # recidive looks at the decisions of the 7 days before a pass
MIN_EVENT_DAYS = 8  # the widest detection window is 7 days; a fresh pass reads the events of its last hour
MIN_ROLLUP_DAYS = 70    # the monthly report compares a month with the whole month before it
ROLLUPS = ("facts_hourly", "blob_hourly", "xff_hourly", "relay_hourly", "store_calls_hourly")


def prune(store, keep_days: int, now: datetime, keep_events_days: int | None = None,
          keep_rollups_days: int | None = None) -> dict[str, int]:
    """Delete what is older than the cutoffs, in one transaction; returns rows deleted per table.
    ``keep_events_days`` / ``keep_rollups_days`` None keep the raw events / the roll-ups whole.
    Events go only once rolled up (seq at or under their roll-up's watermark): a late log read
    just now and not rolled up yet is counted before it is forgotten. The caller rolls up first."""
    cutoff = now - timedelta(days=max(int(keep_days), MIN_DAYS))
    done = {}
    with store.unit():
        done["findings"] = store.value("delete from findings where coalesce(last_seen, now) < ?", [cutoff])
        done["decisions"] = store.value("delete from decisions where coalesce(revoked_at, until) < ?", [cutoff])
        done["ingest_runs"] = store.value("delete from ingest_runs where started_at < ?", [cutoff])
        done["detect_runs"] = store.value("delete from detect_runs where ran_at < ?", [cutoff])
        if keep_events_days is not None:
            done.update(_events(store, now - timedelta(days=max(int(keep_events_days), MIN_EVENT_DAYS))))
        if keep_rollups_days is not None:
            days = max(int(keep_rollups_days), int(keep_events_days or 0), MIN_ROLLUP_DAYS)
            done.update(_rollups(store, now - timedelta(days=days)))
    return done


def _events(store, cutoff: datetime) -> dict[str, int]:
    p = {"cutoff": cutoff}
    return {
        "events": store.value("""
            delete from events where ts < $cutoff
              and seq <= coalesce((select last_rowid from rollup_state where name = 'events'), -1)""", p),
        "object_events": store.value("""
            delete from object_events where ts < $cutoff
              and seq <= coalesce((select last_rowid from rollup_state where name = 'object_events'), -1)""", p),
        # CRProxy's own application log, read from the same stream: nothing rolls it up
        "proxy_events": store.value("delete from proxy_events where ts < $cutoff", p),
    }


def _rollups(store, cutoff: datetime) -> dict[str, int]:
    """The hourly roll-ups before ``cutoff``, and the address → prefix rows no roll-up names any
    more (an address comes back: the next roll-up adds its row again)."""
    present = {t for (t,) in store.execute("select table_name from information_schema.tables")}
    done = {}
    for table in ROLLUPS:
        if table in present:            # relay_hourly: from migration 11
            done[table] = store.value(f"delete from {quote_ident(table)} where hour < ?", [cutoff])
    if any(done.values()):
        done["ip_prefix"] = store.value("""
            delete from ip_prefix p where not exists (select 1 from facts_hourly f where f.client_ip = p.ip)""")
    return done

"""The scheduled work of `pullwarden serve`: tail-ingest, detect, publish. A failing job is
recorded (health, metrics) and the last good policy keeps being served."""
from __future__ import annotations

import logging
import os
import time
import traceback
from datetime import timedelta
from pathlib import Path

import duckdb
from apscheduler.schedulers.background import BackgroundScheduler

from enforcer.service import Services, lower_priority

log = logging.getLogger("pullwarden.jobs")


INGEST_SLICE = 32 << 20     # bytes of log per hold of the store (about 150,000 lines, 1-2 s)
BACKLOG_WAIT = 1.0          # seconds a detection pass waits between looks at a backlog


def _guarded(services: Services, name: str, fn, every: float | None = None):
    """The job ``fn`` as the scheduler runs it: a failure is logged and kept for /healthz (what,
    when, how many times in a row, when it is tried again: at its next run, ``every`` seconds
    on; its unit of work was rolled back, so nothing is half done), and the last good policy
    keeps being served. A failure that invalidated the database stops serve (Services.fatal)."""
    def run():
        try:
            fn()
            services.jobs[name] = {"ok": services.clock(), "error": None}
        except Exception as e:  # a job must never take the server down
            log.error("job %s failed (retried at its next run, in %s s): %s\n%s", name, every, e,
                      traceback.format_exc())
            job = services.jobs.get(name, {})
            at = services.clock()
            services.jobs[name] = {"ok": job.get("ok"), "error": f"{type(e).__name__}: {e}", "failed_at": at,
                                   "failures": job.get("failures", 0) + 1,
                                   "retry_at": at + timedelta(seconds=every) if every else None}
    return run


def configure_store(store, cfg) -> None:
    """DuckDB inside serve: small and on one thread. Its resident memory is about the memory
    limit plus 100 MB of its own; ingest reads small chunks (each chunk's rows pass through
    memory that the limit does not bound)."""
    store.execute(f"set memory_limit = '{int(cfg.serve_memory_mb)}MB'")
    store.execute(f"set threads = {max(1, int(cfg.serve_duckdb_threads))}")
    # No checkpoint by DuckDB's own choosing (a commit past 16 MiB of WAL, or a big insert that
    # skips the WAL): one that cannot pin memory invalidates the database. Serve checkpoints
    # by itself, when no analytics read holds memory (Services.checkpoint).
    store.execute("set checkpoint_threshold = '1TB'")
    store.execute(f"set auto_checkpoint_skip_wal_threshold = {1 << 62}")
    cfg.values["chunk_mb"] = max(1, min(cfg.chunk_mb, cfg.serve_chunk_mb))


WAL_CHECKPOINT = 16 << 20       # bytes of WAL after which an ingest run checkpoints


def _wal_bytes(store) -> int:
    try:
        return os.stat(f"{store.path}.wal").st_size
    except OSError:
        return 0


def ingest(services: Services) -> None:
    """Tail-ingest the sources and roll up. A settled file bigger than a chunk is read in chunks
    too: in one transaction, a rotated log of gigabytes would take its size in memory. A
    backlog is read in slices, and the store is let go between them: an admin change or a
    publish waits for one slice, not for the whole backlog. Far behind, a slice is a catch-up's
    (enforcer/catchup.py): larger, with the roll-up of the slices before it beside it; the live
    slice that follows rolls up the rest."""
    from enforcer import catchup
    from ingest.pipeline import Ingester, waiting
    from rules.rollup import SERVE_BATCH, roll_up
    cfg = services.settings
    lower_priority()
    try:
        while True:
            with services.lock:
                behind = catchup.behind(services, waiting(services.store, list(cfg.sources)))
                services.catching_up = behind
                if behind:
                    report = catchup.catch_up(services, list(cfg.sources), Ingester)
                else:
                    report = Ingester(services.store, cfg, in_place_max=cfg.chunk_mb << 20,
                                      max_bytes=INGEST_SLICE).run(list(cfg.sources))
                    # statistics stay fresh between detection passes
                    roll_up(services.store, SERVE_BATCH, cfg)
                if _wal_bytes(services.store) > WAL_CHECKPOINT:
                    services.checkpoint()
                # after a catch-up slice that read lines: the next slice, or the live one that
                # rolls up the last (an unreadable file keeps "waiting" high: it reads nothing)
                more = report.more or (behind and report.total("lines") > 0)
                services.backlog = more                 # set before the store is let go
            if report.total("events"):
                services.new_events.set()              # a fresh pass judges them (fresh_detection)
            if not more or services.stopping.is_set():
                return
            time.sleep(0.01)        # long enough for a waiting thread to take the lock
    except BaseException:
        services.backlog = False    # a failing ingest must not hold detection back for ever
        raise
    finally:
        services.catching_up = False


def detection(services: Services, lower: bool = True, fresh: bool = False):
    """One detection pass, then a new policy version if a decision changed; the pass's result
    (None when the server stopped first, or a fresh pass found nothing new). While a backlog is
    being read it waits: half a backlog would be judged by half its traffic (and a day of 40,000
    addresses squeezed into the first slice needs more memory than a whole week). ``lower``: at
    the jobs' priority (not for a pass an admin asked for through the API, which runs on a
    request thread). ``fresh``: only the entities with events since the last pass (see
    rules.detect.Fresh); none before the first full pass, and a full one when the rules changed."""
    cfg = services.settings
    if lower:
        lower_priority()
    while True:
        with services.lock:
            if not services.backlog:
                result = _detect(services, cfg, fresh)
                break
        if services.stopping.wait(BACKLOG_WAIT):
            return None
    if result is None:
        return None
    services.publisher.publish()          # a new version only if a decision changed
    services.passes.published(services.clock())
    return result


def fresh_detection(services: Services):
    """The pass that follows an ingest run that stored events, at most every
    detect_fresh_interval seconds (the job's interval): a ban follows the line that completes
    its evidence within about ingest_interval + detect_fresh_interval + the pass itself, not
    detect_interval. Nothing to do when ingest stored nothing since the last one began and no
    hour began since the last pass (then windows lost their oldest hour: rules/changed.py)."""
    if not services.new_events.is_set() and not services.passes.hour_turned(services.clock()):
        return None
    services.new_events.clear()         # before the pass: events stored during it make the next one due
    return detection(services, fresh=True)


def rules_signature(rules) -> str:
    """What decides a rule's findings and decisions: a change means a full pass is due."""
    return repr(sorted((r.name, r.entity, r.window, r.where, r.action, r.simulate, r.duration,
                        r.escalation_factor, r.escalation_cap) for r in rules))


def _rules(services: Services, cfg) -> list:
    """The rules, read again when a rule file changed, was added or removed: a fresh pass
    follows every ingest run, and reading them is ~40 ms of Python, holding the interpreter
    the API's threads answer on."""
    from rules.engine import PACKS, load_rules
    folders = [PACKS] + ([Path(cfg.rules_dir)] if cfg.rules_dir else [])
    stamp = tuple(sorted((str(f), st.st_mtime_ns, st.st_size) for folder in folders
                         for f in folder.rglob("*.y*ml") if (st := f.stat())))
    if services.passes.read is None or services.passes.read[0] != stamp:
        services.passes.read = (stamp, load_rules(services.store, None, cfg.rules_dir or None))
    return services.passes.read[1]


def _detect(services: Services, cfg, fresh: bool = False):
    """The pass itself, with the store held; None for a fresh pass with nothing new to judge."""
    from rules.detect import Fresh, detect, events_top, last_full_pass, objects_top
    rules = _rules(services, cfg)
    p, signature, top = services.passes, rules_signature(rules), events_top(services.store)
    objects = objects_top(services.store)
    if fresh and (p.upto is None or (top == p.upto and objects == p.objects_upto
                                     and not p.hour_turned(services.clock()))):
        return None             # the full pass after the start comes first; or nothing moved
    if fresh and p.rules != signature:
        fresh = False           # other rules: they judge every entity, the breaker sees all their bans
    scope = Fresh(after=p.upto, upto=top, since=p.full_at, last=p.last.get("now"),
                  objects_after=p.objects_upto, objects_upto=objects) if fresh else None
    started, now = time.monotonic(), services.clock()
    if not fresh:
        # Rows and index entries written since the last checkpoint stay pinned in DuckDB's
        # memory; a checkpoint makes them evictable (at 96 MB the feature queries over a
        # week of 6 M events run out of memory without it, and pass with it). A fresh pass
        # reads a few entities' rows and goes without: it follows every ingest run.
        try:
            services.checkpoint()
        except duckdb.Error as e:     # the pass may still fit; it says so if not
            log.warning("checkpoint before detection failed: %s", e)
    # more memory for the feature queries, given back afterwards (the server stays small); a
    # pass that does not fit is tried once more with twice as much
    for mb in (cfg.detect_memory_mb, 2 * cfg.detect_memory_mb):
        try:
            with services.memory.at_least(services.store, mb):
                # the fresh passes' bans since the last full pass count, from before a restart too
                result = detect(services.store, cfg, rules, now, fresh=scope,
                                since=None if fresh else last_full_pass(services.store, now))
            for h in result.held:       # the operator must hear of it: nothing else will
                log.warning("HELD rule %s: %d new bans held (%s); approve or drop them: "
                            "POST /v1/admin/decisions/approve|drop", h.rule, len(h.decisions), h.reason)
            break
        except duckdb.OutOfMemoryException:
            if mb != cfg.detect_memory_mb:
                raise
            log.warning("detection did not fit in detect_memory_mb = %d MB; trying %d MB "
                        "(raise the setting if this repeats)", mb, 2 * mb)
    newest = services.store.value("select max(ts) from events where seq > ? and seq <= ?",
                                  [-1 if p.upto is None else p.upto, top])
    p.judged(fresh, now, top, newest, signature, time.monotonic() - started, objects)
    return result


def prune(services: Services, lower: bool = True) -> dict[str, int]:
    """Roll up, then delete what retention lets go (core/retention.py) at the server's clock, and
    checkpoint: the deleted rows' blocks are free for new events only once a checkpoint wrote
    the deletes, and the file stops growing when they are reused. ``lower``: at the jobs'
    priority (not for the admin's prune through the API, on a request thread)."""
    from core.retention import prune as prune_store
    from rules.rollup import SERVE_BATCH, roll_up
    cfg = services.settings
    if lower:
        lower_priority()
    with services.lock:
        roll_up(services.store, SERVE_BATCH, cfg)
        done = prune_store(services.store, cfg.keep_days, services.clock(), cfg.keep_events_days,
                           cfg.keep_rollups_days)
        if any(done.values()):
            services.checkpoint()
    if any(done.values()):
        log.info("pruned %s", ", ".join(f"{n} {table}" for table, n in done.items() if n))
    return done


def publish(services: Services) -> None:
    lower_priority()
    services.publisher.refresh()
    services.save_cursors()


class _NotBusy(logging.Filter):
    """APScheduler warns each time a job is still running when its next turn comes; for a tail
    ingest that is catching up, or a detection pass longer than a second, that is the plan."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def start(services: Services) -> BackgroundScheduler:
    """The jobs, on APScheduler's wall-clock timer (their first runs are wall-clock times, whatever
    ``services.clock`` reads); with a simulated clock (serve --clock-start) the daily prune runs
    once a simulated day."""
    from core.clock import utcnow
    cfg = services.settings
    wall = utcnow()
    day = 86400.0 / getattr(services.clock, "rate", 1.0)
    logging.getLogger("apscheduler.scheduler").addFilter(_NotBusy())
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    if cfg.sources:
        scheduler.add_job(_guarded(services, "ingest", lambda: ingest(services), cfg.ingest_interval), "interval",
                          seconds=cfg.ingest_interval, id="ingest", name="ingest", next_run_time=wall)
    scheduler.add_job(_guarded(services, "detect", lambda: detection(services), cfg.detect_interval), "interval",
                      seconds=cfg.detect_interval, id="detect", name="detect",
                      next_run_time=wall + timedelta(seconds=1))
    if cfg.sources and cfg.detect_fresh_interval > 0:
        scheduler.add_job(_guarded(services, "fresh", lambda: fresh_detection(services), cfg.detect_fresh_interval),
                          "interval", seconds=cfg.detect_fresh_interval, id="fresh", name="fresh")
    if cfg.sources:         # byte windows (enforcer/windows.py): looks after each ingest run that stored events
        from enforcer import windows
        counted = windows.Counted()
        every = cfg.detect_fresh_interval or cfg.ingest_interval
        scheduler.add_job(_guarded(services, "windows", lambda: (lower_priority(), windows.enforce(services, counted)),
                                   every), "interval", seconds=every, id="windows", name="windows")
    scheduler.add_job(_guarded(services, "publish", lambda: publish(services), cfg.publish_interval), "interval",
                      seconds=cfg.publish_interval, id="publish", name="publish")
    scheduler.add_job(_guarded(services, "prune", lambda: prune(services), day), "interval", seconds=day, id="prune",
                      name="prune", next_run_time=wall + timedelta(seconds=min(600.0, day)))
    from enforcer import budget_guard       # the budget guard, and the monthly report on the 1st (report_timezone)
    scheduler.add_job(_guarded(services, "budget", lambda: (lower_priority(), budget_guard.check(services)),
                               cfg.budget_check_interval), "interval",
                      seconds=cfg.budget_check_interval, id="budget", name="budget",
                      next_run_time=wall + timedelta(seconds=30))
    scheduler.add_job(_guarded(services, "report", lambda: (lower_priority(), budget_guard.monthly_report(services)),
                               31 * day), "cron", day=1,
                      hour=1, minute=5, timezone=cfg.report_timezone or "UTC", id="report", name="report")
    scheduler.start()
    return scheduler

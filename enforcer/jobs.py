"""The scheduled work of `pullwarden serve`: tail-ingest, detect, publish. A failing job is
recorded (health, metrics) and the last good policy keeps being served."""
from __future__ import annotations

import logging
import os
import threading
import traceback
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from enforcer.service import Services

log = logging.getLogger("pullwarden.jobs")


JOB_NICE = 10       # added to the nice value of the threads that run the jobs


def _lower_priority() -> None:
    """The jobs' threads (and the reader threads they start, which inherit it) give way to the
    API's: on a small machine an ingest run or a detection pass busy on every core would
    otherwise sit in front of each poll, which must be answered in milliseconds."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < JOB_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, JOB_NICE)
    except (OSError, AttributeError):       # not Linux, or not allowed: run at the same priority
        pass


def _guarded(services: Services, name: str, fn):
    def run():
        try:
            fn()
            services.jobs[name] = {"ok": services.clock(), "error": None}
        except Exception as e:  # a job must never take the server down
            log.error("job %s failed: %s\n%s", name, e, traceback.format_exc())
            services.jobs[name] = {**services.jobs.get(name, {}), "error": f"{type(e).__name__}: {e}"}
    return run


def start(services: Services) -> BackgroundScheduler:
    """Jobs from imports done here, in the server process only: the API itself needs none."""
    from ingest.pipeline import Ingester
    from rules.detect import detect
    from rules.engine import load_rules
    from rules.rollup import roll_up

    cfg = services.settings

    def ingest():
        _lower_priority()
        with services.lock:
            Ingester(services.store, cfg).run(list(cfg.sources))
            roll_up(services.store)           # statistics stay fresh between detection passes

    def detection():
        _lower_priority()
        with services.lock:
            rules = load_rules(services.store, None, cfg.rules_dir or None)
            # more memory for the feature queries, given back afterwards (the server stays small)
            services.store.execute(f"set memory_limit = '{int(cfg.detect_memory_mb)}MB'")
            try:
                detect(services.store, cfg, rules)
            finally:
                services.store.execute(f"set memory_limit = '{int(cfg.serve_memory_mb)}MB'")
        services.publisher.publish()          # a new version only if a decision changed

    def publish():
        _lower_priority()
        services.publisher.refresh()
        services.save_cursors()

    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    if cfg.sources:
        scheduler.add_job(_guarded(services, "ingest", ingest), "interval", seconds=cfg.ingest_interval,
                          id="ingest", name="ingest", next_run_time=services.clock())
    scheduler.add_job(_guarded(services, "detect", detection), "interval", seconds=cfg.detect_interval, id="detect",
                      name="detect", next_run_time=services.clock() + timedelta(seconds=1))
    scheduler.add_job(_guarded(services, "publish", publish), "interval", seconds=cfg.publish_interval,
                      id="publish", name="publish")
    scheduler.start()
    return scheduler

"""Serve's tail-ingest when its sources are far behind (a first start over a big log, a restart
after an outage): each slice of the backlog is loaded in one transaction on one DuckDB thread,
while the roll-up of the slices before it runs beside it, on a thread and a connection of its
own; back to the small footprint that the proxies' polls are answered beside once it is live.

Live, serve reads 4 MiB chunks and rolls up after each run: fine for a few seconds of new
lines, but a day of a busy mirror's log then takes longer than the day. Why this shape (2 M
lines, CPU seconds on this 2-core machine, bench/README.md): a load on two threads leaves
partial row groups behind each transaction, and the next checkpoint merges them, rewriting
the rows around them (64 MiB chunks on two threads: 11.8 CPU s to load, 7.3 to checkpoint);
one thread and 128 MiB a transaction leaves full row groups (8.9 CPU s, nothing to merge).
The second core then has the roll-ups (5.2 CPU s), which waited for the load before.
The polls do not mind: they are answered from memory, and both threads run at the jobs'
lower CPU priority (jobs.lower_priority)."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import duckdb

from core.settings import Settings

log = logging.getLogger("pullwarden.catchup")

CATCH_UP_BYTES = 64 << 20   # bytes waiting (ingest.pipeline.waiting) beyond which ingest catches up
CAUGHT_UP_BYTES = 32 << 20  # ...and up to which it is live again: what is left after the last slice is
                            # read live (a 62 MiB rest in 4 MiB chunks with the roll-up after each
                            # slice cost twice the CPU a line of a catch-up slice does)


def behind(services, waiting: int) -> bool:
    """Whether the next slice is a catch-up's, with ``waiting`` bytes unread."""
    return waiting > (CAUGHT_UP_BYTES if services.catching_up else CATCH_UP_BYTES)


@contextmanager
def catching_up(services):
    """DuckDB with at least serve_catchup_memory_mb for the load and the roll-up beside it (2 M
    lines: both fit in 96 MB, peak RSS as before; 64 MB ran out) and serve_catchup_threads for
    the block, given back at its end; yields the settings a catch-up slice reads with (its
    chunk: the slice)."""
    cfg, store = services.settings, services.store
    with services.memory.at_least(store, cfg.serve_catchup_memory_mb):
        store.execute(f"set threads = {max(1, int(cfg.serve_catchup_threads))}")
        try:
            yield Settings({**cfg.values, "chunk_mb": max(1, cfg.serve_catchup_chunk_mb)}, cfg.origin)
        finally:
            store.execute(f"set threads = {max(1, int(cfg.serve_duckdb_threads))}")


def catch_up(services, sources: list[str], ingester):
    """One slice of the backlog, with the store held: its chunk in one transaction, and the
    events committed before it rolled up meanwhile; the slice's IngestReport. The roll-up ends
    before the store is let go; a load's failure is raised, and a roll-up's too unless it ran
    out of memory beside the load: what it left is rolled up beside the next slice, or alone
    with serve's own memory once ingest is live. ``ingester`` is ingest's Ingester, handed in by
    serve's ingest job: the one place where the enforcer reaches the ingest stage."""
    with catching_up(services) as settings, ThreadPoolExecutor(1, "pullwarden-rollup") as pool:
        # -1: nothing yet (None would be no bound, and the roll-up could reach into this slice)
        tops = {t: services.store.value(f"select coalesce(max(seq), -1) from {t}") for t in ("events", "object_events")}
        rolled = pool.submit(_roll_up_beside, services, tops)
        try:
            report = ingester(services.store, settings, in_place_max=settings.chunk_mb << 20,
                              max_bytes=settings.chunk_mb << 20).run(sources)
        finally:
            wait([rolled])
        try:
            rolled.result()
        except duckdb.OutOfMemoryException as e:
            log.warning("the roll-up beside a catch-up slice did not fit in serve_catchup_memory_mb = %d MB "
                        "(it is done later): %s", settings.serve_catchup_memory_mb, e)
    return report


def _roll_up_beside(services, upto: dict) -> None:
    """The roll-up of the events up to ``upto``, on a connection of its own (DuckDB runs each
    connection's statement on the thread that calls it: a second core), at the jobs' priority.
    It writes only the roll-up tables and their watermark, which the load never touches."""
    from enforcer.service import lower_priority
    from rules.rollup import SERVE_BATCH, roll_up
    lower_priority()
    with services.store.reading() as store:
        roll_up(store, SERVE_BATCH, services.settings, upto=upto)

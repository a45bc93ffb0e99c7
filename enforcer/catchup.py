"""Serve's tail-ingest when its sources are far behind (a first start over a big log, a restart
after an outage): larger chunks and slices, every core and more of DuckDB's memory until it is
live again, then back to the small footprint that the proxies' polls are answered beside.

Live, serve reads 4 MiB chunks on one DuckDB thread in 64 MB: about 74,000 lines/s, fine for a
few seconds of new lines, but a day of a busy mirror's log then takes longer than the day. The
polls do not mind the catch-up: they are answered from memory, and DuckDB's threads are started
by the ingest job's thread, whose lower CPU priority (jobs.lower_priority) they inherit."""
from __future__ import annotations

import os
from contextlib import contextmanager

from core.settings import Settings

CATCH_UP_BYTES = 64 << 20   # bytes waiting (ingest.pipeline.waiting) beyond which ingest catches up
MB_PER_THREAD = 48          # of serve_catchup_memory_mb, for each DuckDB thread by default
CATCH_UP_SLICE = 128 << 20  # bytes of log per hold of the store while catching up (about 2 s at 250,000 lines/s)


@contextmanager
def catching_up(services):
    """DuckDB with at least serve_catchup_memory_mb and more threads (serve_catchup_threads; by
    default one per core, at most one per MB_PER_THREAD) for the block, given back at its end;
    yields the settings a catch-up run reads with (its chunks)."""
    cfg, store = services.settings, services.store
    memory = cfg.serve_catchup_memory_mb
    # the load of 2 M lines on two threads fit in 96 MB (peak RSS 221 MB; 272 MB at 160 MB,
    # no faster); the roll-up after each slice runs at serve's own footprint (jobs.ingest)
    threads = cfg.serve_catchup_threads or min(os.cpu_count() or 1, max(1, memory // MB_PER_THREAD))
    with services.memory.at_least(store, memory):
        store.execute(f"set threads = {max(1, int(threads))}")
        try:
            yield Settings({**cfg.values, "chunk_mb": max(1, cfg.serve_catchup_chunk_mb)}, cfg.origin)
        finally:
            store.execute(f"set threads = {max(1, int(cfg.serve_duckdb_threads))}")

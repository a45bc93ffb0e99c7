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
from ingest.sources import SourceError, discover, is_gzip

CATCH_UP_BYTES = 64 << 20   # bytes waiting beyond which ingest catches up (a few seconds' work live)
CATCH_UP_SLICE = 128 << 20  # bytes of log per hold of the store while catching up (about 2 s at 250,000 lines/s)


def waiting(store, patterns: list[str]) -> int:
    """Bytes of the sources that ingest has not read yet: each plain file's size past the offset
    its row has read (a file without a row: all of it), a .gz not yet read whole at its
    compressed size (an underestimate). From stat() and two small queries; nothing is opened."""
    try:
        paths = discover(patterns)
    except SourceError:
        return 0                # the ingest run says why
    read = {(dev, inode): offset for dev, inode, offset in
            store.execute("select dev, inode, read_offset from files where inode is not null")}
    archives = {path for (path,) in store.execute("select path from archives_read")}
    total = 0
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        if is_gzip(path):
            total += 0 if str(path.resolve()) in archives else st.st_size
        else:
            total += max(0, st.st_size - read.get((st.st_dev, st.st_ino), 0))
    return total


@contextmanager
def catching_up(services):
    """DuckDB on every core (serve_catchup_threads) with at least serve_catchup_memory_mb for the
    block, given back at its end; yields the settings a catch-up run reads with (its chunks)."""
    cfg, store = services.settings, services.store
    threads = cfg.serve_catchup_threads or os.cpu_count() or 1
    with services.memory.at_least(store, cfg.serve_catchup_memory_mb):
        store.execute(f"set threads = {max(1, int(threads))}")
        try:
            yield Settings({**cfg.values, "chunk_mb": max(1, cfg.serve_catchup_chunk_mb)}, cfg.origin)
        finally:
            store.execute(f"set threads = {max(1, int(cfg.serve_duckdb_threads))}")

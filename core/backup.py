"""A backup of the whole database, taken while serve keeps running: DuckDB's `COPY FROM DATABASE`
into a new file ATTACHed beside the open one, inside one read transaction, so the copy is the
database as of one moment (MVCC: ingest and admin changes go on meanwhile and are simply not in
it). Tables, their rows, sequences with their current values (events' seq goes on after the
watermark in a restored copy), defaults and keys are copied; the copy holds no deleted rows or
free blocks, so it is often smaller than the file. A restore is that file put where `db` points,
with serve stopped; it opens like any database of its schema version (an older one migrates).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from core.store import quote_ident

ALIAS = "pw_backup"


def _literal(text: str) -> str:
    """ATTACH takes its path as a literal, not a bound parameter."""
    return "'" + text.replace("'", "''") + "'"


def backup(store, dest: str | Path) -> dict:
    """Copy the database behind ``store`` into a new DuckDB file at ``dest`` (which must not exist;
    its folder must). Written as ``dest.partial`` and renamed when whole, so a file at ``dest``
    is always a complete backup. Returns what was copied."""
    dest = Path(dest).absolute()
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists; a backup never overwrites a file")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"{dest.parent}: no such folder")
    partial = dest.with_name(dest.name + ".partial")
    for leftover in (partial, Path(f"{partial}.wal")):
        leftover.unlink(missing_ok=True)       # a killed backup's
    started = time.perf_counter()
    source = store.value("select current_database()")
    store.execute(f"attach {_literal(str(partial))} as {ALIAS}")
    try:
        with store.unit():
            store.execute(f"copy from database {quote_ident(source)} to {ALIAS}")
            counts = {t: store.value(f"select count(*) from {ALIAS}.{quote_ident(t)}")
                      for t in ("events", "decisions", "facts_hourly", "audit")}
            version = store.value(f"select max(version) from {ALIAS}.schema_version")
    finally:
        store.execute(f"detach {ALIAS}")
    os.replace(partial, dest)
    return {"path": str(dest), "bytes": dest.stat().st_size, "seconds": round(time.perf_counter() - started, 3),
            "schema_version": version, "rows": counts}

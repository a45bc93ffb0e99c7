"""A backup of the whole database, taken while serve keeps running: DuckDB's `COPY FROM DATABASE`
into a new file ATTACHed beside the open one, inside one read transaction, so the copy is the
database as of one moment (MVCC: ingest and admin changes go on meanwhile and are simply not in
it). Tables, their rows, sequences with their current values (events' seq goes on after the
watermark in a restored copy), defaults and keys are copied; the copy holds no deleted rows or
free blocks, so it is often smaller than the file. A restore is that file put where `db` points,
with serve stopped; it opens like any database of its schema version (an older one migrates).

A backup is verified twice: when it is made (the file, reopened on its own, read whole) and
before a restore puts it anywhere. Opening a DuckDB file reads only its header and catalog: one
flipped byte in a table's blocks was found only when a query read that block (a restore of such
a file succeeded, and the restored database failed later, on "Corrupt database file: checksum").
Reading every column of every row makes DuckDB check every data block's checksum, and the row
counts are compared with the ones written into the backup (MANIFEST) when it was made.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb

from core.store import quote_ident

ALIAS = "pw_backup"
MANIFEST = "pw_backup_manifest"     # inside the backup: each table's rows, as copied


class BackupError(Exception):
    """A backup that cannot be trusted: the message names the file and what is wrong."""


def _literal(text: str) -> str:
    """ATTACH takes its path as a literal, not a bound parameter."""
    return "'" + text.replace("'", "''") + "'"


def _tables(con, database: str) -> list[str]:
    return [t for (t,) in con.execute("""select table_name from duckdb_tables()
                                         where database_name = ? and schema_name = 'main' and not temporary
                                         order by table_name""", [database]).fetchall() if t != MANIFEST]


def backup(store, dest: str | Path) -> dict:
    """Copy the database behind ``store`` into a new DuckDB file at ``dest`` (which must not exist;
    its folder must), then verify the written file. Written as ``dest.partial`` and renamed when
    whole and verified, so a file at ``dest`` is always a complete backup. Returns what was copied."""
    dest = Path(dest).absolute()
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists; a backup never overwrites a file")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"{dest.parent}: no such folder")
    partial = dest.with_name(dest.name + ".partial")
    for leftover in (partial, Path(f"{partial}.wal")):
        leftover.unlink(missing_ok=True)       # a killed backup's
    started = time.perf_counter()
    try:
        rows, version = _copy(store, partial, dest)
        verify(partial)
    except BaseException:                   # nothing half-made or unverified stays behind
        for leftover in (partial, Path(f"{partial}.wal")):
            leftover.unlink(missing_ok=True)
        raise
    os.replace(partial, dest)
    return {"path": str(dest), "bytes": dest.stat().st_size, "seconds": round(time.perf_counter() - started, 3),
            "schema_version": version, "verified": True,
            "rows": {t: rows[t] for t in ("events", "decisions", "facts_hourly", "audit") if t in rows}}


def _copy(store, partial: Path, dest: Path) -> tuple[dict, int]:
    """COPY FROM DATABASE into ``partial`` in one read transaction, with the manifest; each
    table's rows and the schema version."""
    source = store.value("select current_database()")
    store.execute(f"attach {_literal(str(partial))} as {ALIAS}")
    try:
        with store.unit():
            store.execute(f"copy from database {quote_ident(source)} to {ALIAS}")
            # in the same transaction: the source as of the copy's moment, table by table
            rows = {t: store.value(f"select count(*) from {quote_ident(source)}.main.{quote_ident(t)}")
                    for t in _tables(store.con, source)}
            copied = {t: store.value(f"select count(*) from {ALIAS}.main.{quote_ident(t)}") for t in rows}
            if copied != rows:
                raise BackupError(f"{dest}: the copy holds other row counts than the database "
                                  f"({ {t: (rows[t], copied[t]) for t in rows if rows[t] != copied[t]} })")
            store.execute(f"create table {ALIAS}.{MANIFEST} (table_name varchar primary key, rows bigint)")
            store.execute(f"insert into {ALIAS}.{MANIFEST} select unnest($t), unnest($n)",
                          {"t": list(rows), "n": list(rows.values())})
            version = store.value(f"select max(version) from {ALIAS}.schema_version")
    finally:
        store.execute(f"detach {ALIAS}")
    return rows, version


def verify(path: str | Path) -> dict:
    """Read the DuckDB file at ``path`` whole, on a database instance of its own (read-only, one
    thread, a small memory limit: inside serve it must not take serve's memory): every column of
    every row of every table, so that DuckDB checks each data block's checksum, and each table's
    rows against the backup's MANIFEST when it has one (a file made before there was one is only
    read). Returns {table: rows}; raises BackupError saying what is wrong."""
    path = Path(path)
    try:
        con = duckdb.connect(str(path), read_only=True, config={"threads": 1, "memory_limit": "64MB"})
    except duckdb.Error as e:
        raise BackupError(f"{path}: does not open as a DuckDB database: {_first_line(e)}") from None
    try:
        database = con.execute("select current_database()").fetchone()[0]
        tables = _tables(con, database)
        if "schema_version" not in tables:
            raise BackupError(f"{path}: not a pullwarden database (no schema_version table)")
        rows = {}
        for t in tables:
            # count(*) alone reads no column: hashing every value makes every block be read
            rows[t] = con.execute(f"select count(*), bit_xor(hash(columns(*))) from {quote_ident(t)}").fetchone()[0]
        written = None
        if _has_manifest(con):
            written = dict(con.execute(f"select table_name, rows from {MANIFEST}").fetchall())
    except duckdb.Error as e:
        raise BackupError(f"{path}: damaged: {_first_line(e)}") from None
    finally:
        con.close()
    if written is not None and written != rows:
        wrong = sorted(set(written) ^ set(rows) | {t for t in written if t in rows and written[t] != rows[t]})
        raise BackupError(f"{path}: damaged: the rows read differ from the rows written, in "
                          + ", ".join(f"{t} ({rows.get(t, 'missing')} of {written.get(t, 'none')})" for t in wrong))
    return rows


def _has_manifest(con) -> bool:
    return bool(con.execute("select count(*) from duckdb_tables() where table_name = ?", [MANIFEST]).fetchone()[0])


def drop_manifest(store) -> None:
    """A restored database is a database, not a backup: its manifest goes once it has been checked."""
    store.execute(f"drop table if exists {MANIFEST}")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0].removeprefix("IO Error: ")

"""Events out of DuckDB as Hive-partitioned Parquet, one folder a day and registry:

    DEST/day=2024-11-20/registry=docker.io/events_0.parquet

for DuckDB (`read_parquet('DEST/**/*.parquet', hive_partitioning = true)`), ClickHouse, Trino
or Spark once one node's DuckDB file is no longer where the history should live. Only plain
Parquet types: ts is a TIMESTAMP (microseconds, UTC, no zone: every stage here works in UTC),
counts and bytes BIGINT, status INTEGER, the rest strings; the day and the registry are in the
folder names (Hive's `__HIVE_DEFAULT_PARTITION__` for events with no registry, `:` in a
registry with a port written `%3A`). The registry comes from the request path, so whoever sends
a request chooses it: a name whose folder would be longer than ``NAME_MAX`` bytes (a file name
has at most 255) gets the folder `registry=_long_<sha256 prefix>`, and every file also holds the
registry as stored in the column `registry_name` (one value a file: a few bytes), so that nothing
is lost and a folder name is always one the file system takes.

A day is written whole into a staging folder beside DEST and then put in place of that day's
folder: exporting a day again replaces it, never adds a second copy, and a reader sees the old
day or the new one (for the moment between two renames, neither). A day the store now holds
fewer events of than the export (retention deleted raw events) keeps its earlier export.

One COPY per day and registry into the folder DuckDB's PARTITION_BY would name, not one
COPY ... PARTITION_BY (day, registry): inside serve DuckDB has 64 MB (serve_memory_mb), and a
partitioned write of a day of 500,000 events ran out of it (with 1 thread, 16,384-row groups,
a lower flush threshold, insertion order off alike), while a registry at a time peaked at
122 MB RSS for the whole process."""
from __future__ import annotations

import hashlib
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path


# Column by column, what the files hold: the event as stored, and beside it the address's AS
# number, organisation and country and the client's family, so that a distributed engine
# needs no dimension tables. file_id is left out: it means something only in this DuckDB file.
# peer_ip is written out whole: the store leaves it null when the peer is the client.
SELECT = """
    select e.ts, e.client_ip, coalesce(e.peer_ip, e.client_ip) as peer_ip, e.forwarded_for, e.remote_user,
           e.registry as registry_name, e.method,
           cast(e.status as integer) as status, e.bytes, e.request_time, e.user_agent, e.host,
           e.cache_status, e.repository, e.kind, e.reference, e.digest, e.uri, e.location,
           i.asn, i.as_org, i.country, u.family as client_family
    from events e
    left join ip_info i on i.ip = e.client_ip
    left join user_agents u on u.user_agent = e.user_agent
    where e.ts >= $start and e.ts < $end and e.registry is not distinct from $registry
"""
# what Hive escapes in a partition value (FileUtils.escapePathName), as DuckDB writes and reads it
_HIVE_ESCAPE = set('"#%\'*/:=?\\\x7f{[]^') | {chr(c) for c in range(0x20)}


# The longest partition value kept readable, in bytes once escaped: real registry hosts are a few
# dozen characters; a request path can name one of thousands.
NAME_MAX = 100


def hive_value(value: str | None) -> str:
    """A partition value as a folder name: DEST/day=…/registry=<this>, a safe file name whatever
    the value (escaped as Hive does; hashed when that would be longer than NAME_MAX bytes)."""
    if value is None:
        return "__HIVE_DEFAULT_PARTITION__"
    escaped = "".join(f"%{ord(c):02X}" if c in _HIVE_ESCAPE else c for c in value)
    if escaped.startswith("_"):
        # no host starts with one; the names below do: a registry named `_long_…` or
        # `__HIVE_DEFAULT_PARTITION__` (containerd's ?ns= can say anything) must not share their folder
        escaped = "%5F" + escaped[1:]
    if len(escaped.encode()) <= NAME_MAX:
        return escaped
    return "_long_" + hashlib.sha256(value.encode()).hexdigest()[:24]


def _literal(path: Path) -> str:
    """A COPY target is part of the statement (it cannot be a bound parameter): quoted as a
    string literal, and always a path this module made."""
    return "'" + str(path).replace("'", "''") + "'"


def days_between(start: date, end: date) -> list[date]:
    """The days of [start, end)."""
    return [start + timedelta(days=n) for n in range((end - start).days)]


def event_days(store) -> tuple[date, date] | None:
    """The first and last day with events, or None."""
    row = store.execute("select min(ts)::date, max(ts)::date from events")
    return None if not row or row[0][0] is None else (row[0][0], row[0][1])


def _staging(dest: Path, day: date, kind: str) -> Path:
    """Beside DEST (a rename stays on one file system), never inside it: a reader's
    DEST/**/*.parquet must not count a half-written day."""
    return dest.parent / f".{dest.name}.{kind}-{day.isoformat()}"


def export_day(store, dest: Path, day: date) -> dict:
    """Write one day's events under DEST/day=DAY/, replacing what an earlier export wrote there.
    Returns rows, bytes and files per registry as read back from the written files."""
    dest = Path(dest)
    if not dest.is_absolute():
        raise ValueError(f"{dest}: give the destination as an absolute path")
    dest.mkdir(parents=True, exist_ok=True)
    staging, old = _staging(dest, day, "staging"), _staging(dest, day, "old")
    for leftover in (staging, old):         # a run killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        return _export_day(store, dest, day, staging, old)
    finally:                                # whatever happened: no half-written day left beside DEST
        shutil.rmtree(staging, ignore_errors=True)


def _export_day(store, dest: Path, day: date, staging: Path, old: Path) -> dict:
    start = datetime.combine(day, datetime.min.time())
    span = {"start": start, "end": start + timedelta(days=1)}
    written = staging / f"day={day.isoformat()}"
    registries: list[dict] = []
    for (registry,) in store.execute("""select distinct registry from events where ts >= $start and ts < $end
                                        order by registry nulls first""", span):
        folder = written / f"registry={hive_value(registry)}"
        folder.mkdir(parents=True)
        target = folder / "events_0.parquet"
        store.execute(f"""copy ({SELECT}) to {_literal(target)}
                          (format parquet, compression zstd, row_group_size 16384)""", {**span, "registry": registry})
        rows, nbytes = store.execute(f"select count(*), sum(bytes) from read_parquet({_literal(target)})")[0]
        registries.append({"registry": registry, "rows": rows, "bytes": int(nbytes or 0), "files": 1})
    final = dest / f"day={day.isoformat()}"
    before = _summary(store, final) if final.is_dir() else []
    if sum(r["rows"] for r in registries) < sum(r["rows"] for r in before):
        # Events are only ever added, except by retention (keep_events_days, cut at a time of
        # day): a day the store now holds less of was exported whole before, and stays so.
        return _result(day, before, kept="the store holds fewer of this day's events than the export (raw "
                                         "events deleted by keep_events_days): the earlier export is kept")
    if final.exists():
        final.rename(old)
    if written.is_dir():
        try:
            written.rename(final)
        except OSError:
            if old.exists():                # the earlier export stays in place
                old.rename(final)
            raise
    shutil.rmtree(old, ignore_errors=True)
    return _result(day, registries)


def _summary(store, folder: Path) -> list[dict]:
    """Rows, bytes and files per registry of an exported day's folder."""
    glob = _literal(folder / "**" / "*.parquet")
    return [{"registry": r, "rows": n, "bytes": int(b or 0), "files": f} for r, n, b, f in store.execute(f"""
        select registry, count(*), sum(bytes), count(distinct filename)
        from read_parquet({glob}, hive_partitioning = true, filename = true)
        group by registry order by registry nulls first""")]


def _result(day: date, registries: list[dict], kept: str | None = None) -> dict:
    out = {"day": day.isoformat(), "rows": sum(r["rows"] for r in registries),
           "bytes": sum(r["bytes"] for r in registries), "files": sum(r["files"] for r in registries),
           "registries": registries}
    return {**out, "kept": kept} if kept else out


def totals(days: list[dict], dest: Path, seconds: float) -> dict:
    """One run's summary (what `export parquet --json` prints)."""
    return {"dest": str(dest), "days": days, "rows": sum(d["rows"] for d in days),
            "bytes": sum(d["bytes"] for d in days), "files": sum(d["files"] for d in days),
            "seconds": round(seconds, 3)}


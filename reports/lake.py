"""Reports over a folder of Parquet exports from several nodes, as over one database.

A mirror with several proxy nodes runs `pullwarden export parquet` on each, into a folder of
its own in one place (rsync, object storage mounted):

    DIR/<node>/day=2024-11-20/registry=docker.io/events_0.parquet

(or a single node's export, DIR/day=…/registry=…/events_N.parquet). ``open_lake`` checks every
file — its path, that it is Parquet, its columns and types against what the export writes, and
that its rows belong to the day and registry its folders name — and loads the events of the
days asked for into a fresh DuckDB store (a temporary file, removed when done), where ingest's
own classification and the roll-up run on them as on one node's events. Every report then reads
that store as it reads the one database: the figures are those of one database that had ingested every node's logs
(tests/test_lake.py holds them equal). The files are the network's, written by other hosts: a
bad one stops the load with an error that names it.

What the files do not carry is not in the store: decisions (each node's own), the budget and
the tiers set with `pullwarden budget` / `tiers` (the defaults apply), object-storage logs.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from core.geodb import GeoDB
from core.store import open_store
from ingest.enrich import enrich_new
from reports import budget
from reports.export import SELECT, hive_value
from rules.rollup import roll_up

# what export_day names: day=YYYY-MM-DD/registry=VALUE/events_N.parquet, under an optional node folder
DAY = re.compile(r"day=(\d{4}-\d{2}-\d{2})")
REGISTRY = re.compile(r"registry=(.+)")
FILE = re.compile(r"events_\d+\.parquet")
# the events' columns as stored: the files' columns less those export adds from ip_info and user_agents
EVENT_COLUMNS = ("ts", "client_ip", "peer_ip", "forwarded_for", "remote_user", "method", "status", "bytes",
                 "request_time", "user_agent", "host", "cache_status", "registry", "repository", "kind",
                 "reference", "digest", "uri", "location")


class LakeError(ValueError):
    """A file in the folder that is not an export of pullwarden's, or a folder with none."""


def parquet_files(root: Path, first: date | None = None, last: date | None = None) -> list[tuple[Path, date, str]]:
    """Every export file under ``root`` as (path, day, registry folder), of the days in
    [first, last] when given. A file that is not named as the export names its files is an
    error; hidden files (rsync's temporary ones) are passed over."""
    root = Path(root)
    if not root.is_dir():
        raise LakeError(f"{root}: not a folder")
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.is_dir():
            continue
        parts = rel.parts
        day_m = DAY.fullmatch(parts[-3]) if len(parts) in (3, 4) else None
        reg_m = REGISTRY.fullmatch(parts[-2]) if len(parts) in (3, 4) else None
        if not (day_m and reg_m and FILE.fullmatch(parts[-1])):
            raise LakeError(f"{path}: not a file of `pullwarden export parquet` (expected [NODE/]day=YYYY-MM-DD/"
                            "registry=NAME/events_N.parquet)")
        try:
            day = date.fromisoformat(day_m.group(1))
        except ValueError:
            raise LakeError(f"{path}: day={day_m.group(1)} is not a day") from None
        if (first is None or day >= first) and (last is None or day <= last):
            found.append((path, day, reg_m.group(1)))
    return found


def _check(store, path: Path, day: date, folder: str, columns: list[tuple]) -> None:
    """The file is Parquet, has the export's columns and types, and holds rows of its folders'
    day and registry only."""
    try:
        got = [(name, kind) for name, kind, *_ in store.execute(
            "describe select * from read_parquet($f, hive_partitioning = false)", {"f": str(path)})]
    except duckdb.Error as e:
        raise LakeError(f"{path}: not a readable Parquet file ({str(e).strip().splitlines()[0]})") from None
    if got != columns:
        missing = [f"{n} {t}" for n, t in columns if (n, t) not in got]
        extra = [f"{n} {t}" for n, t in got if (n, t) not in columns]
        raise LakeError(f"{path}: not the columns `pullwarden export parquet` writes"
                        + (f"; missing or of another type: {', '.join(missing)}" if missing else "")
                        + (f"; unexpected: {', '.join(extra)}" if extra else ""))
    lo, hi, names, registry = store.execute("""
        select min(ts), max(ts), count(distinct coalesce(registry_name, '')), min(registry_name)
        from read_parquet($f, hive_partitioning = false)""", {"f": str(path)})[0]
    start = datetime.combine(day, datetime.min.time())
    if lo is not None and (lo < start or hi >= start + timedelta(days=1)):
        raise LakeError(f"{path}: holds events from {lo} to {hi}, outside day={day}")
    if lo is not None and (names != 1 or hive_value(registry) != folder):
        raise LakeError(f"{path}: its registry_name does not match its folder registry={folder}")


def open_lake(root: Path, first: date | None = None, last: date | None = None):
    """A fresh store (a temporary file) holding the events of every node's export under ``root``
    of the days [first, last] (all when not given), classified and rolled up as ingest and the
    reports do. The caller closes it."""
    files = parquet_files(root, first, last)
    if not files and not parquet_files(root):
        raise LakeError(f"{root}: no Parquet export in it (expected [NODE/]day=YYYY-MM-DD/registry=NAME/"
                        "events_N.parquet, as `pullwarden export parquet` writes)")
    # a file, not ":memory:": DuckDB can then write what does not fit in memory to disk (in
    # memory, 1 M events took 654 MB, a month of 30 M would take 20 GB); removed with the store
    scratch = tempfile.mkdtemp(prefix="pullwarden-lake-")
    store = open_store(str(Path(scratch) / "lake.duckdb"))
    weakref.finalize(store, shutil.rmtree, scratch, True)
    try:
        span = {"start": datetime(2000, 1, 1), "end": datetime(2000, 1, 1), "registry": None}
        columns = [(name, kind) for name, kind, *_ in store.execute(f"describe {SELECT}", span)]
        for path, day, folder in files:
            _check(store, path, day, folder, columns)
        if files:
            listed = {"f": [str(p) for p, _, _ in files]}
            names = ", ".join(EVENT_COLUMNS)
            picked = ", ".join("registry_name" if c == "registry" else c for c in EVENT_COLUMNS)
            with store.unit():
                # file_id 0: a file of this DuckDB means nothing for another node's events
                store.execute(f"""insert into events ({names}, file_id)
                                  select {picked}, 0 from read_parquet($f, hive_partitioning = false)""", listed)
                # each address's AS and country as its node looked them up (the first row of them,
                # should two nodes' databases differ); user agents are classified here as ingest does
                store.execute("""insert into ip_info
                                 select distinct on (client_ip) client_ip, asn, as_org, country
                                 from read_parquet($f, hive_partitioning = false)
                                 where asn is not null or as_org is not null or country is not null
                                 order by client_ip, asn, as_org, country""", listed)
                enrich_new(store, GeoDB())
            roll_up(store)
    except BaseException:
        store.close()
        raise
    return store


def report_days(month: str, tz_name: str) -> tuple[date, date]:
    """The UTC days a monthly report of ``month`` reads: the month before (comparisons, movers)
    through the month's last day (the projection's four weeks lie inside)."""
    tz = budget.zone(tz_name)
    pstart, _ = budget.month_bounds(budget.previous_month(month), tz)
    _, end = budget.month_bounds(month, tz)
    return pstart.date(), (end - timedelta(microseconds=1)).date()

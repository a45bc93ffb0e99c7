"""Parquet export: what docs/deployment.md's sizing quotes for storage, export and scans.

    python bench/bench_export.py                  # 1,000,000 lines over two days, about a minute

Generates a seeded nginx `main` log with genlogs.py (kept in --workdir), ingests it into a fresh
DuckDB file, then exports every day with `reports.export.export_day` twice, each in a process of
its own so that its peak RSS is its own: at serve's limits (DuckDB memory_limit 64 MB, 1 thread,
as `pullwarden serve` runs it) and unrestricted. Then times grouped scans of the Parquet with
DuckDB (best of 3), and with ClickHouse's engine (chdb) when it is installed, and loads the files
as `stats --parquet` does (reports/lake.py). Prints lines/s of ingest, bytes per million events
in DuckDB and in Parquet, export events/s and peak RSS, scan rows/s, and the load's events/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXPORT = """
import json, resource, sys, time
from datetime import date, timedelta
from pathlib import Path
from core.store import open_store
from reports.export import event_days, export_day
db, dest, limited = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
store = open_store(db)
if limited:
    store.execute("set memory_limit = '64MB'")
    store.execute("set threads = 1")
first, last = event_days(store)
start, rows = time.perf_counter(), 0
day = first
while day <= last:
    rows += export_day(store, dest, day)["rows"]
    day += timedelta(days=1)
seconds = time.perf_counter() - start
print(json.dumps({"rows": rows, "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# the same scans by ClickHouse's engine (chdb), when installed: the day from ts and the registry
# from the column every file holds (ClickHouse reads no Hive folders unless told to)
CLICKHOUSE = {
    "per day and registry": "select toDate(ts) as day, registry_name, count(), sum(bytes), uniqExact(client_ip) "
                            "from {src} group by all format Null",
    "per address and image": "select client_ip, repository, count(), sum(bytes) from {src} group by all "
                             "order by 4 desc limit 20 format Null",
}

LAKE = """
import json, resource, sys, time
from pathlib import Path
from reports.lake import open_lake
from reports.queries import daily_totals
start = time.perf_counter()
store = open_lake(Path(sys.argv[1]))
loaded = time.perf_counter() - start
daily_totals(store)
print(json.dumps({"load_seconds": loaded, "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SCANS = {
    "per day and registry": "select day, registry, count(*), sum(bytes), count(distinct client_ip) from {src} group by all",
    "per address and image": "select client_ip, repository, count(*), sum(bytes) from {src} group by all "
                             "order by 4 desc limit 20",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/pullwarden-bench-export")
    ap.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log = work / f"main-{args.lines}.log"
    if not log.exists():
        with open(log, "w") as f:
            subprocess.run([sys.executable, str(ROOT / "bench" / "genlogs.py"), "--lines", str(args.lines)],
                           stdout=f, check=True)
    empty = work / "empty.toml"        # built-in settings only
    empty.write_text("")
    db = work / "bench.duckdb"
    for p in (db, Path(f"{db}.wal")):
        p.unlink(missing_ok=True)
    ingest = json.loads(subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "ingest", str(log), "--db", str(db), "--json",
         "--config", str(empty)], env=env, cwd=work, capture_output=True, text=True, check=True).stdout)
    out = {"lines": args.lines, "ingest_lines_per_second": ingest["lines_per_second"],
           "duckdb_mb_per_million": os.path.getsize(db) / 2**20 / (args.lines / 1e6)}
    for name, limited in (("serve_limits", "1"), ("unrestricted", "0")):
        dest = work / f"lake-{name}"
        shutil.rmtree(dest, ignore_errors=True)
        r = json.loads(subprocess.run([sys.executable, "-c", EXPORT, str(db), str(dest), limited], env=env,
                                      capture_output=True, text=True, check=True).stdout)
        size = sum(p.stat().st_size for p in dest.rglob("*.parquet"))
        out[name] = {**r, "events_per_second": r["rows"] / r["seconds"],
                     "parquet_mb_per_million": size / 2**20 / (r["rows"] / 1e6)}
    import duckdb
    con = duckdb.connect()
    src = f"read_parquet('{work}/lake-unrestricted/**/*.parquet', hive_partitioning = true)"
    out["scans"] = {}
    for name, sql in SCANS.items():
        best = min(_timed(con, sql.format(src=src)) for _ in range(3))
        out["scans"][name] = {"seconds": best, "rows_per_second": args.lines / best}
    try:
        import chdb
    except ImportError:
        chdb = None
    if chdb is not None:
        src = f"file('{work}/lake-unrestricted/*/*/*.parquet', Parquet)"
        out["clickhouse_scans"] = {}
        for name, sql in CLICKHOUSE.items():
            best = min(_timed_clickhouse(chdb, sql.format(src=src)) for _ in range(3))
            out["clickhouse_scans"][name] = {"seconds": best, "rows_per_second": args.lines / best}
    # `stats --parquet`: the files loaded into a store (checked, classified, rolled up), then read
    out["lake"] = json.loads(subprocess.run([sys.executable, "-c", LAKE, str(work / "lake-unrestricted")], env=env,
                                            capture_output=True, text=True, check=True).stdout)
    out["loadavg"] = os.getloadavg()
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.lines:,} lines of nginx main (load average {out['loadavg'][0]:.1f}, {os.cpu_count()} cores)")
    print(f"ingest: {out['ingest_lines_per_second']:,.0f} lines/s; DuckDB: {out['duckdb_mb_per_million']:.0f} MB per "
          "million events")
    for name in ("serve_limits", "unrestricted"):
        r = out[name]
        print(f"export {name:>12}: {r['rows']:,} events in {r['seconds']:.2f} s = {r['events_per_second']:,.0f}/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, Parquet {r['parquet_mb_per_million']:.0f} MB per million")
    for name, r in out["scans"].items():
        print(f"scan {name}: {r['seconds']:.3f} s = {r['rows_per_second'] / 1e6:.1f} M rows/s")
    for name, r in out.get("clickhouse_scans", {}).items():
        print(f"ClickHouse (chdb) scan {name}: {r['seconds']:.3f} s = {r['rows_per_second'] / 1e6:.1f} M rows/s")
    r = out["lake"]
    print(f"stats --parquet: files loaded in {r['load_seconds']:.2f} s "
          f"({args.lines / r['load_seconds']:,.0f} events/s), {r['seconds']:.2f} s in all, peak RSS {r['peak_rss_mb']:.0f} MB")


def _timed_clickhouse(chdb, sql: str) -> float:
    start = time.perf_counter()
    chdb.query(sql)
    return time.perf_counter() - start


def _timed(con, sql: str) -> float:
    start = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

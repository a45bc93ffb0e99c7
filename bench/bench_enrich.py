"""Enrichment benchmark: an ingest run that adds a small chunk to a store holding millions of events.

    python bench/bench_enrich.py                          # 10,000,000 events, 1,000 new lines, 3 runs
    python bench/bench_enrich.py --events 2000000 --repeat 1

Serve ingests every few seconds, and each run ends by looking up the user agents and client
addresses it has not seen before (ingest/enrich.py). What that costs must not grow with the
history the store holds.

What it does:

  1. Builds once, in the work dir (default /tmp/pullwarden-bench), a store of --events events
     written straight by SQL (300,000 distinct addresses, 5,000 user agents), enriched once with
     the ASN and country databases of bench_ingest.py, checkpointed. Reused while it exists.
  2. Writes a --chunk line log with bench/genlogs.py (another seed: some addresses are new).
  3. For each run: copies the store, and in a child process with serve's DuckDB settings
     (configure_store: 64 MB memory limit, one thread) runs one ingest of the chunk with both
     databases configured. Prints the run's seconds, the seconds of its enrichment and the
     child's peak RSS (GNU time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.bench_ingest import build_geo_dbs, run_measured, say  # noqa: E402

ADDRESSES = 300_000
USER_AGENTS = 5_000

CHILD = r"""
import json, sys, time
from core.settings import load
from core.store import open_store
from enforcer.jobs import configure_store
import ingest.pipeline as pipeline

db, log, asn, country = sys.argv[1:5]
cfg = load(None, {"db": db, "asn_db": asn, "country_db": country}, environ={})
store = open_store(db)
configure_store(store, cfg)
spent = {}
real = pipeline.enrich_new
def timed(store, geo):
    t = time.perf_counter()
    try:
        return real(store, geo)
    finally:
        spent["enrich"] = time.perf_counter() - t
pipeline.enrich_new = timed
t = time.perf_counter()
report = pipeline.Ingester(store, cfg, in_place_max=cfg.chunk_mb << 20).run([log])
print(json.dumps({"run_seconds": time.perf_counter() - t, "enrich_seconds": spent["enrich"],
                  "events": report.total("events")}))
"""


def build_store(path: Path, events: int, asn: Path, country: Path) -> None:
    from core.store import open_store
    from core.geodb import GeoDB
    from ingest.enrich import enrich_new
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    say(f"building {path} ({events:,} events) ...")
    store = open_store(str(tmp))
    # addresses spread over the databases' networks; a few events per address per day
    store.execute("""
        insert into events (ts, client_ip, peer_ip, method, status, bytes, user_agent, registry, repository,
                            kind, file_id)
        select timestamp '2024-11-01' + to_seconds(i // 20),
               ip, ip, 'GET', 200, 1000 + i % 5000,
               'containerd/1.' || (i * 7 % $uas) || '.0', 'docker.io', 'library/img' || (i % 500),
               case when i % 3 = 0 then 'manifest' else 'blob' end, 1
        from (select i, ((h >> 24) % 223 + 1) || '.' || ((h >> 16) % 256) || '.' || ((h >> 8) % 256)
                         || '.' || (h % 256) as ip
              from (select i, hash(i % $ips) as h from range($n) t(i)))""",
                  {"n": events, "ips": ADDRESSES, "uas": USER_AGENTS})
    enrich_new(store, GeoDB(str(asn), str(country)))
    store.execute("checkpoint")
    store.close()
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--chunk", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/pullwarden-bench")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    asn, country, _ = build_geo_dbs(work)
    from core.store import VERSION
    base = work / f"enrich-{args.events}-v{VERSION}.duckdb"     # built by this schema's code: enriched up to date
    if not base.is_file():
        build_store(base, args.events, asn, country)
    log = work / f"enrich-chunk-{args.chunk}.log"
    with open(log, "wb") as out:
        subprocess.run([sys.executable, str(HERE / "genlogs.py"), "--lines", str(args.chunk), "--format", "main",
                        "--seed", "99"], stdout=out, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    env["PYTHONPATH"] = str(REPO)
    runs = []
    for n in range(args.repeat):
        db = work / "enrich-run.duckdb"
        for p in (db, Path(f"{db}.wal")):
            p.unlink(missing_ok=True)
        shutil.copyfile(base, db)
        out, err = work / "enrich-run.out", work / "enrich-run.err"
        res = run_measured([sys.executable, "-c", CHILD, str(db), str(log), str(asn), str(country)],
                           work, env, out, err)
        if res["exit_code"] != 0:
            sys.exit(f"bench_enrich: the run failed:\n{err.read_text()[-3000:]}")
        res.update(json.loads(out.read_text()))
        runs.append(res)
        say(f"run {n + 1}: ingest {res['run_seconds']:.3f} s, of it enrichment {res['enrich_seconds']:.3f} s, "
            f"peak RSS {res['peak_rss_bytes'] / 1e6:.0f} MB")
    summary = {"events_in_store": args.events, "chunk_lines": args.chunk,
               "median_run_seconds": statistics.median(r["run_seconds"] for r in runs),
               "median_enrich_seconds": statistics.median(r["enrich_seconds"] for r in runs),
               "max_peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs), "runs": runs}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.events:,} events, +{args.chunk:,} lines: ingest {summary['median_run_seconds']:.3f} s "
              f"(median), enrichment {summary['median_enrich_seconds']:.3f} s, "
              f"peak RSS {summary['max_peak_rss_bytes'] / 1e6:.0f} MB")


if __name__ == "__main__":
    main()

"""Monthly report benchmark: the report of a month of 30 days x 1 M events a day.

    python bench/bench_report.py [--days 30] [--events-per-day 1000000] [--workdir /tmp/pullwarden-bench-report]

The month (November 2026) is generated as bench_dashboard.py does it (bench_detect.py's pull
sessions, an AS number and a country for every address, user agents classified, rolled up),
kept in --workdir and reused when it has the asked-for size. Then, as `pullwarden report
monthly` does it in one process:

  closed   the month after its end: figures, HTML with its three SVG charts, PDF, CSV, JSON, and
           frozen into the reports table (the frozen row is removed before each run);
  frozen   the same again with the frozen row there (the figures are recomputed to compare the
           inputs' hash; the stored bytes are given);
  partial  the month on the 20th, with the projection.

With --month-before, October is there too (61 days, 61 M events): the comparisons and the movers
then read the month before as a real report would.

Each three times; median and worst. Target (issue 11): the month's report <= 10 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_detect import GENERATE  # noqa: E402
from core.settings import load  # noqa: E402
from core.store import open_store  # noqa: E402

TARGET_S = 10.0
MONTH = "2026-11"


START = datetime(2026, 11, 1)


def build(db: Path, days: int, per_day: int, before: int = 0) -> dict:
    """The month of events, enriched and rolled up (as bench_dashboard.py builds it); reused
    when already there."""
    from core.geodb import GeoDB
    from ingest.enrich import enrich_new
    from rules.rollup import roll_up
    want = (days + before) * per_day
    store = open_store(str(db))
    try:
        if store.value("select count(*) from events") == want and store.value("select count(*) from rollup_state"):
            return {"events": want, "reused": True}
        store.close()
        for p in (db, Path(f"{db}.wal")):
            p.unlink(missing_ok=True)
        store = open_store(str(db))
        t = time.perf_counter()
        for day in range(days + before):    # a day at a time: i * span overflows 64 bits for a month
            store.execute(GENERATE.replace("range($n) t(i)", "range($n * $day, $n * ($day + 1)) t(i)")
                          .replace("((i * $span) // $n)", "(((i - $n * $day) * $span) // $n)"),
                          {"start": START + timedelta(days=day - before), "n": per_day, "day": day,
                           "span": int(timedelta(days=1).total_seconds() * 1e6) - 1})
        generated = time.perf_counter() - t
        t = time.perf_counter()
        store.execute("""insert into ip_info
            select ip, 64512 + hash(split_part(ip, '.', 1)) % 300, 'AS of ' || split_part(ip, '.', 1),
                   ['CN', 'US', 'DE', 'JP', 'SG', 'HK', 'KR', 'FR', 'GB', 'IN', 'BR', 'NL'][(hash(ip) % 12 + 1)::bigint]
            from (select distinct client_ip as ip from events)""")
        enrich_new(store, GeoDB("", ""))
        roll_up(store)
        return {"events": want, "reused": False, "generate_s": round(generated, 1),
                "enrich_and_rollup_s": round(time.perf_counter() - t, 1)}
    finally:
        store.close()


def timed(fn, repeat: int) -> tuple[dict, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2)}, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--events-per-day", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/pullwarden-bench-report")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--month-before", action="store_true",
                    help="also October (31 days at the same rate), so that the comparisons and movers read a month "
                         "before (in report-with-october.duckdb)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    db = Path(args.workdir) / ("report-with-october.duckdb" if args.month_before else "report.duckdb")
    built = build(db, args.days, args.events_per_day, 31 if args.month_before else 0)

    from reports import archive
    cfg = load(None, {"db": str(db), "price_per_tib": [[10, 90.0], [50, 80.0], [0, 70.0]]}, environ={})
    store = open_store(str(db))
    try:
        facts = store.value("select count(*) from facts_hourly")

        made = []

        def closed():
            store.execute("delete from reports")
            r = archive.build(store, MONTH, cfg, datetime(2026, 12, 2))
            made.append(r.outputs)
            return r
        closed_t, report = timed(closed, args.repeat)
        frozen_t, again = timed(lambda: archive.build(store, MONTH, cfg, datetime(2026, 12, 2)), args.repeat)
        partial_t, part = timed(lambda: archive.build(store, MONTH, cfg, datetime(2026, 11, 20)), args.repeat)
        same = again.outputs == report.outputs and all(m == made[0] for m in made)     # made afresh each time
        t = time.perf_counter()
        from reports import monthly
        monthly.figures(store, MONTH, "UTC", datetime(2026, 12, 2), cfg.price_per_tib)
        figures_s = time.perf_counter() - t
    finally:
        store.close()
    fig = json.loads(report.outputs["json"])
    out = {**built, "facts_hourly_rows": facts, "total_bytes": fig["total_bytes"], "closed": closed_t,
           "frozen": frozen_t, "partial": partial_t, "figures_only_s": round(figures_s, 2),
           "same_bytes_on_rerun": same, "sizes": {k: len(v) for k, v in report.outputs.items()},
           "partial_projected_bytes": json.loads(part.outputs["json"])["projected_bytes"]}
    if args.json:
        print(json.dumps(out))
        return
    worst = max(closed_t["max_s"], frozen_t["max_s"], partial_t["max_s"])
    print(f"monthly report benchmark: {built['events']:,} events over {args.days} days"
          f"{' and the 31 before' if args.month_before else ''} ({facts:,} hourly roll-up rows), {os.cpu_count()} CPUs")
    print(f"  closed month, made and frozen:  median {closed_t['median_s']:5.2f} s  worst {closed_t['max_s']:5.2f} s")
    print(f"  closed month, frozen already:   median {frozen_t['median_s']:5.2f} s  worst {frozen_t['max_s']:5.2f} s  "
          f"same bytes: {same}")
    print(f"  month in progress (the 20th):   median {partial_t['median_s']:5.2f} s  worst {partial_t['max_s']:5.2f} s")
    print(f"  of which the figures (SQL):     {figures_s:5.2f} s;  outputs {out['sizes']}")
    print(f"  target <= {TARGET_S:.0f} s  {'PASS' if worst <= TARGET_S else 'MISS'}")


if __name__ == "__main__":
    main()

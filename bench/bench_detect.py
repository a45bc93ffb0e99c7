"""Detection benchmark: a full pass over 7 days of events, then an incremental hourly pass.

    python bench/bench_detect.py [--events 6000000] [--days 7] [--workdir /tmp/pullwarden-bench-detect]

Events are generated inside DuckDB (deterministic: hashes of the row number), shaped like a
mirror's traffic: ~100k addresses with skewed activity, a catalogue of 2,000 images with 3-8
layers, docker/containerd/podman user agents, some X-Forwarded-For, errors and tag listings,
and a few re-pull storms; requests come in pull sessions of eight. Targets (issue 3): full pass <= 5 s, incremental hourly pass <= 1 s,
peak memory <= 2 GB. Prints figures; no peer to compare with in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import load  # noqa: E402
from core.store import open_store  # noqa: E402
from rules.detect import detect  # noqa: E402
from rules.engine import load_rules  # noqa: E402

START = datetime(2024, 11, 11)

GENERATE = """
insert into events (ts, client_ip, peer_ip, forwarded_for, remote_user, method, status, bytes, user_agent,
                    registry, repository, kind, reference, digest, file_id)
select ts, ip, ip, case when hash(s, 'x') % 50 = 0 then '10.0.' || (hash(s, 'x') % 256) || '.1' end, null,
       case when pos = 1 then 'HEAD' else 'GET' end,
       case when hash(s, 'e') % 40 = 0 and pos = 2 then 404 when pos = 0 then 401 else 200 end,
       case when pos >= 3 then (hash(img, pos) % 200000000) + 1000000 when pos = 2 then 1573 else 87 end,
       ua, split_part(img, '/', 1), substr(img, strpos(img, '/') + 1),
       case when pos = 0 then 'ping' when pos <= 2 then 'manifest' when hash(s, 't') % 30 = 0 then 'tags'
            else 'blob' end,
       case when pos in (1, 2) then 'latest' end,
       case when pos >= 3 then 'sha256:' || md5(img || pos::varchar) || md5(img) end, 1
from (
    -- a pull session: 8 requests (token ping, HEAD, GET manifest, 5 blobs) from one client
    select $start::timestamp + to_microseconds(((i * $span) // $n)::bigint) as ts, i // 8 as s, i % 8 as pos,
        case when hash(i // 8, 'storm') % 200 = 0 then '198.18.0.' || (hash(i // 8, 'sx') % 5 + 1)
             when hash(i // 8, 'a') % 10 < 3 then '203.0.' || (hash(i // 8, 'b') % 40) || '.' || (hash(i // 8, 'c') % 250 + 1)
             when hash(i // 8, 'a') % 10 < 9 then (hash(i // 8, 'd') % 200 + 1) || '.' || (hash(i // 8, 'e') % 256) || '.'
                  || (hash(i // 8, 'f') % 256) || '.' || (hash(i // 8, 'g') % 50 + 1)
             else '2001:db8:' || printf('%x', hash(i // 8, 'v') % 4000) || '::' || printf('%x', hash(i // 8, 'w') % 20 + 1)
        end as ip,
        case when hash(i // 8, 'storm') % 200 = 0 then 'docker.io/library/python'
             else ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io', 'nvcr.io'][(hash(i // 8, 'r') % 5 + 1)::bigint]
                  || '/team' || (power(hash(i // 8, 'm') % 1000 / 1000.0 + 0.001, 3) * 2000)::int || '/app' end as img,
        case when hash(i // 8, 'storm') % 200 = 0 then 'docker/24.0.7 go/go1.20.10 UpstreamClient(Go-http-client/1.1)'
             when hash(i // 8, 'u') % 5 = 0 then 'containerd/v1.7.' || (hash(i // 8, 'u2') % 25)
             when hash(i // 8, 'u') % 5 = 1 then 'containers/5.28.1 (github.com/containers/image)'
             else 'docker/2' || (hash(i // 8, 'u3') % 8) || '.0.' || (hash(i // 8, 'u4') % 9) || ' go/go1.22.7 os/linux' end as ua
    from range($n) t(i)
)
"""


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=6_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--workdir", default="/tmp/pullwarden-bench-detect")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    db = Path(args.workdir) / "detect.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    store = open_store(str(db))
    span = timedelta(days=args.days) - timedelta(hours=1)      # the last hour arrives later
    t = time.perf_counter()
    store.execute(GENERATE, {"start": START, "n": args.events, "span": int(span.total_seconds() * 1e6)})
    generated = time.perf_counter() - t
    cfg = load(None, {}, environ={})
    rules = load_rules(store)

    now = START + span
    t = time.perf_counter()
    full = detect(store, cfg, rules, now)
    full_s = time.perf_counter() - t

    last_hour = args.events // (args.days * 24)
    store.execute(GENERATE.replace("from range($n) t(i)", "from range($n, $n + $extra) t(i)")
                  .replace("((i * $span) // $n)", "($span + ((i - $n) * 3600000000) // $extra)"),
                  {"start": START, "n": args.events, "span": int(span.total_seconds() * 1e6), "extra": last_hour})
    t = time.perf_counter()
    hourly = detect(store, cfg, rules, now + timedelta(hours=1))
    hourly_s = time.perf_counter() - t
    total = store.value("select count(*) from events")
    facts = store.value("select count(*) from facts_hourly")
    store.close()

    out = {"events": total, "days": args.days, "generate_s": round(generated, 2), "rules": len(rules),
           "full_pass_s": round(full_s, 2), "full_findings": len(full.findings),
           "hourly_events": last_hour, "hourly_pass_s": round(hourly_s, 2), "hourly_findings": len(hourly.findings),
           "facts_hourly_rows": facts, "peak_rss_mb": round(rss_mb())}
    if args.json:
        print(json.dumps(out))
        return
    print(f"detection benchmark: {total:,} events over {args.days} days, {len(rules)} rules, "
          f"{os.cpu_count()} CPUs (generated in {generated:.1f} s)")
    print(f"  full pass (roll up everything, every rule):  {full_s:6.2f} s  {len(full.findings)} findings   "
          f"target <= 5 s  {'PASS' if full_s <= 5 else 'MISS'}")
    print(f"  incremental hourly pass ({last_hour:,} new events): {hourly_s:6.2f} s  "
          f"target <= 1 s  {'PASS' if hourly_s <= 1 else 'MISS'}")
    print(f"  peak RSS {rss_mb():.0f} MB (target <= 2048 MB)  {'PASS' if rss_mb() <= 2048 else 'MISS'};  "
          f"facts_hourly {facts:,} rows")


if __name__ == "__main__":
    main()

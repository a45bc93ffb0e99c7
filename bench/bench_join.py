"""The redirected-blob join: what rolling up a redirect-mode mirror costs beside a mirror that
serves its blobs itself.

    python bench/bench_join.py                    # 2,000,000 blob pulls over 7 days, 3 runs
    python bench/bench_join.py --pulls 500000 --repeat 1 --json

Two DuckDB files with the same pulls, generated inside DuckDB (seeded):

  * peer: a proxy that serves its blobs — one `events` row per blob GET, 200 with its bytes;
  * redirect mode: the proxy's `307` for each blob in `events` plus the store's download in
    `object_events` (80% with the signed URL's referer, 10% from an older proxy without it,
    matched by blob and time to the 307, 10% direct reads of the bucket with no 307; one in
    twenty downloads split into two Range requests; one in a hundred delivered twice).

For each, the full roll-up (rules/rollup.py, which joins the downloads) is timed into a fresh
copy of the file, and the redirect-mode totals are checked against what was generated: bytes
counted once, to the byte. Prints seconds, rows per second and the ratio redirect/peer.
A benchmark run by hand, not a test; it never fails on a slow figure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.store import open_store  # noqa: E402
from rules.rollup import roll_up  # noqa: E402

CLIENTS = 20_000
BLOBS = 5_000
DAYS = 7

# one row per pull: its client, blob, size, time (seconds into the week), and what kind of download
PULLS = """
create table pulls as
select i, '10.' || ((c >> 16) & 255) || '.' || ((c >> 8) & 255) || '.' || (c & 255) as ip,
       'sha256:' || lpad(printf('%x', b), 64, '0') as digest,
       1000000 + (hash(b) % 50000000)::bigint as size,
       timestamp '2024-11-18' + to_seconds((hash(i, 1) % ($days * 86400))::bigint) as ts,
       case when i % 10 = 8 then 'bare' when i % 10 = 9 then 'direct' else 'referer' end as how,
       i % 20 = 3 as split, i % 100 = 7 as twice
from (select i, hash(i, 2) % $clients as c, hash(i, 3) % $blobs as b from range($pulls) t(i))
"""


def make(path: str, pulls: int, redirect: bool) -> int:
    """Writes the mirror; returns the bytes the store (or the proxy) served."""
    s = open_store(path)
    s.execute(PULLS, {"pulls": pulls, "clients": CLIENTS, "blobs": BLOBS, "days": DAYS})
    common = "ts, client_ip, peer_ip, method, bytes, user_agent, registry, repository, kind, digest, file_id"
    if not redirect:
        s.execute(f"""insert into events ({common}, status)
                      select ts, ip, ip, 'GET', size, 'containerd/v1.7.22', 'docker.io', 'library/nginx', 'blob',
                             digest, 1, 200 from pulls order by ts""")
        total = s.value("select sum(size) from pulls")
    else:
        s.execute(f"""insert into events ({common}, status)
                      select ts, ip, ip, 'GET', 310, 'containerd/v1.7.22', 'docker.io', 'library/nginx', 'blob',
                             digest, 1, 307 from pulls where how <> 'direct' order by ts""")
        s.execute("""
            insert into object_events (ts, client_ip, source, method, status, bytes, object_size, digest,
                                       requester_ip, request_id, file_id)
            select ts + interval 2 second, ip, 's3', 'GET', case when split then 206 else 200 end,
                   case when split then size - part * (size // 2) - (1 - part) * (size - size // 2) else size end,
                   size, digest, case when how = 'referer' then ip end, 'r' || i || '-' || part, 2
            from pulls, range(2) p(part) where part = 0 or split
            union all
            select ts + interval 2 second, ip, 's3', 'GET', 200, size, size, digest,
                   case when how = 'referer' then ip end, 'r' || i || '-0', 2
            from pulls where twice and not split""")
        total = s.value("select sum(size) from pulls")
    s.execute("drop table pulls")
    s.execute("checkpoint")
    s.close()
    return int(total)


def timed(template: str, work: Path) -> tuple[float, tuple]:
    path = str(work / "run.duckdb")
    shutil.copyfile(template, path)
    s = open_store(path)
    began = time.perf_counter()
    roll_up(s)
    took = time.perf_counter() - began
    got = s.execute("select sum(bytes)::bigint, sum(object_bytes)::bigint, sum(unjoined_bytes)::bigint "
                    "from facts_hourly")[0]
    s.close()
    os.remove(path)
    return took, got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pulls", type=int, default=2_000_000, help="blob pulls in the week (default 2,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pw-bench-join-"))
    try:
        peer_db, redirect_db = str(work / "peer.duckdb"), str(work / "redirect.duckdb")
        peer_total = make(peer_db, a.pulls, False)
        total = make(redirect_db, a.pulls, True)
        s = open_store(redirect_db)
        rows = s.value("select count(*) from object_events")
        # unjoined: no referer and no 307 for the blob in the join's window, from anyone (a direct read
        # of a popular blob is matched to someone else's 307 by time and blob: that is the fallback)
        direct = s.value("""select coalesce(sum(bytes), 0) from object_events o where requester_ip is null
                            and not exists (select 1 from events e where e.digest = o.digest
                                            and e.ts >= o.ts - interval 600 second
                                            and e.ts <= o.ts + interval 60 second)""")
        events = s.value("select count(*) from events")
        s.close()
        runs = {"peer": [], "redirect": []}
        check = None
        for _ in range(a.repeat):
            runs["peer"].append(timed(peer_db, work)[0])
            took, check = timed(redirect_db, work)
            runs["redirect"].append(took)
        peer, red = statistics.median(runs["peer"]), statistics.median(runs["redirect"])
        out = {"pulls": a.pulls, "redirect_events": events, "object_rows": rows,
               "peer_seconds": runs["peer"], "redirect_seconds": runs["redirect"],
               "peer_rows_per_second": round(a.pulls / peer), "redirect_rows_per_second": round((events + rows) / red),
               "ratio_redirect_over_peer": round(red / peer, 2),
               "bytes_expected": total, "bytes_counted": check[0], "object_bytes": check[1],
               "unjoined_bytes": check[2], "unjoined_expected": int(direct),
               "exact": check[0] == total == peer_total and check[1] == total and check[2] == direct}
        if a.json:
            print(json.dumps(out))
            return
        print(f"{a.pulls:,} blob pulls over {DAYS} days, {CLIENTS:,} clients, {BLOBS:,} blobs; median of {a.repeat}")
        print(f"  peer (proxy serves blobs)  {a.pulls:>10,} events               roll-up {peer:6.2f} s "
              f"{out['peer_rows_per_second']:>9,} rows/s")
        print(f"  redirect mode              {events:>10,} events + {rows:,} store rows  roll-up {red:6.2f} s "
              f"{out['redirect_rows_per_second']:>9,} rows/s")
        print(f"  ratio redirect / peer: {out['ratio_redirect_over_peer']}x the time for the same pulls")
        print(f"  bytes counted {check[0]:,} of {total:,} generated ({'exact' if out['exact'] else 'MISMATCH'}); "
              f"unjoined {check[2]:,} (direct reads {int(direct):,})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

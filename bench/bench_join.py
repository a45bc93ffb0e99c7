"""The redirected-blob join: what rolling up a redirect-mode mirror costs beside a mirror that
serves its blobs itself.

    python bench/bench_join.py                    # 2,000,000 blob pulls over 7 days, 3 runs
    python bench/bench_join.py --pulls 500000 --repeat 1 --json

Two DuckDB files with the same pulls, generated inside DuckDB (seeded):

  * peer: a proxy that serves its blobs — one `events` row per blob GET, 200 with its bytes;
  * redirect mode: the proxy's `307` for each blob in `events` plus, in `object_events`, the
    mirror's ListObjects (its storage driver's Stat) before each 307 and the store's download
    (80% through a signed URL with a referer, 10% signed without one — AWS S3's links — matched
    by blob and time to the 307, 10% reads of the bucket with another key and no 307; one in
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
        # a signed link's read: the mirror's requester, QueryString; another key's: AuthHeader
        read = """ip, 's3', 'REST.GET.OBJECT', 'GET', 'docker/registry/v2/blobs/' || digest || '/data',
                  case when how = 'direct' then '/b/k' else '/b/k?X-Amz-Signature=[scrubbed]' end,
                  case when how = 'direct' then 'arn:aws:iam::1:user/backup' else 'arn:aws:iam::1:user/crproxy' end,
                  case when how = 'direct' then 'AuthHeader' else 'QueryString' end"""
        cols = "client_ip, source, operation, method, object_key, uri, requester, auth_type"
        s.execute(f"""
            insert into object_events (ts, {cols}, status, bytes, object_size, digest, requester_ip, request_id, file_id)
            select ts + interval 2 second, {read}, case when split then 206 else 200 end,
                   case when split then size - part * (size // 2) - (1 - part) * (size - size // 2) else size end,
                   size, digest, case when how = 'referer' then ip end, 'r' || i || '-' || part, 2
            from pulls, range(2) p(part) where part = 0 or split
            union all
            select ts + interval 2 second, {read}, 200, size, size, digest,
                   case when how = 'referer' then ip end, 'r' || i || '-0', 2
            from pulls where twice and not split
            union all
            select ts, '10.255.0.5', 's3', 'REST.GET.BUCKET', 'GET', null, '/b?max-keys=1&prefix=[scrubbed]',
                   'arn:aws:iam::1:user/crproxy', 'AuthHeader', 200, 512, null, null, null, 'l' || i, 2
            from pulls where how <> 'direct'""")
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
    got = s.execute("select sum(bytes)::bigint, sum(object_bytes)::bigint, sum(unjoined_bytes)::bigint, "
                    "sum(exact_bytes)::bigint, sum(timed_bytes)::bigint from facts_hourly")[0] + \
        (s.value("select coalesce(sum(calls), 0) from store_calls_hourly"),)
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
        # unjoined: the reads with another key (no 307 handed them out), once each
        direct = s.value("""select coalesce(sum(bytes), 0) from (select distinct request_id, bytes from object_events
                            where auth_type = 'AuthHeader' and operation = 'REST.GET.OBJECT')""")
        listings = s.value("select count(*) from object_events where operation = 'REST.GET.BUCKET'")
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
               "exact_bytes": check[3], "timed_bytes": check[4], "store_calls": check[5], "listings": listings,
               "exact": check[0] == total == peer_total and check[1] == total and check[2] == direct
               and check[5] == listings}
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
              f"unjoined {check[2]:,} (reads with another key {int(direct):,}); by time alone {check[4]:,}; "
              f"the mirror's listings {check[5]:,} of {listings:,}, none a download")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

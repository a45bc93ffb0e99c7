"""The AS-number expansion (enforcer/asnets.py) on a GeoLite2-ASN-sized database: a tree of
about 500,000 networks (400,000 IPv4 /24s and /22s, 100,000 IPv6 /48s and /36s, in ASes of 1 to
2,000 networks, most of a few) is built here with mmdb-writer, then indexed as serve does when the file is new,
and a publish with a large and a small AS banned is timed (issue 20 §3).

    python bench/bench_asn_rebuild.py [--networks 500000] [--keep FILE]

Building the tree takes minutes (mmdb-writer is pure Python); the figures are the index's."""
from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(path: Path, total: int) -> dict[int, int]:
    """The tree; AS number -> how many networks it has."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet
    rng = random.Random(20)
    w = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    sizes: dict[int, int] = {}
    v4 = int(total * 0.8)
    asn, i = 1000, 0
    while i < total:
        # heavy-tailed, as real ASes: most have a few networks, a few clouds thousands
        n = min(rng.choices([1, 2, 3, 5, 10, 30, 100, 500, 2000], weights=[40, 20, 12, 10, 8, 5, 3, 1.5, 0.5])[0],
                total - i)
        nets = []
        for _ in range(n):
            if i < v4:          # /24s and /22s packed upward from 1.0.0.0, never overlapping
                nets.append(IPNetwork(((1 << 24) + (i << 10), 22 if i % 7 == 0 else 24)))
            else:
                nets.append(IPNetwork(((0x2000 << 112) + ((i - v4) << 93), 36 if i % 11 == 0 else 48)))
            i += 1
        w.insert_network(IPSet(nets), {"autonomous_system_number": asn,
                                       "autonomous_system_organization": f"EXAMPLE-{asn}"})
        sizes[asn] = n
        asn += 1
    w.to_db_file(str(path))
    return sizes


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", type=int, default=500_000)
    ap.add_argument("--keep", help="build the tree into this file, or reuse it when it exists")
    args = ap.parse_args()
    from core.settings import load
    from core.store import open_store
    from enforcer.asnets import ASNetworks
    from enforcer.render import render
    from enforcer.snapshot import Publisher
    folder = Path(tempfile.mkdtemp(prefix="pw-asn-"))
    db = Path(args.keep) if args.keep else folder / "asn.mmdb"
    t = time.perf_counter()
    if not db.exists():
        build(db, args.networks)
        print(f"tree: {args.networks:,} networks built in {time.perf_counter() - t:.0f} s, "
              f"{db.stat().st_size / 2**20:.1f} MB")
    import maxminddb
    with maxminddb.open_database(str(db)) as r:
        counted = sum(1 for _ in r)
    print(f"tree: {counted:,} networks in {db}")
    before = rss_mb()
    nets = ASNetworks(str(db))
    t = time.perf_counter()
    nets.load()
    print(f"index (the rebuild when the file changes): {time.perf_counter() - t:.2f} s, "
          f"{len(nets.v4.keys() | nets.v6.keys()):,} AS numbers, max RSS {before:.0f} -> {rss_mb():.0f} MB")
    biggest = max(nets.v4, key=lambda a: len(nets.v4[a]))
    t = time.perf_counter()
    got = nets.networks([str(biggest), "1000"])
    print(f"lookup of AS{biggest} ({len(nets.v4[biggest]):,} networks -> {len(got[str(biggest)]):,} CIDRs) "
          f"and AS1000: {1000 * (time.perf_counter() - t):.1f} ms")
    cfg = load(None, {"db": str(folder / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    now = datetime(2026, 12, 1, 12)
    pub = Publisher(store, threading.RLock(), lambda: now, 30)
    pub.asn_networks = nets
    pub.publish()
    for asn in (biggest, 1000):
        store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
                         values (nextval('decision_seq'), 'asn', ?, 'ban', null, 'manual', 'bench', ?, ?)""",
                      [str(asn), now, now + timedelta(hours=1)])
    t = time.perf_counter()
    v = pub.publish()
    print(f"publish with the two AS numbers banned: {time.perf_counter() - t:.2f} s "
          f"({sum(len(x) for x in v.content['asn_networks'].values()):,} networks in the policy)")
    t = time.perf_counter()
    files = render(json.loads(gzip.decompress(v.body)), warn=lambda m: print("  " + m[:160]))
    print(f"render: {time.perf_counter() - t:.2f} s; nginx include {len(files['nginx-pullwarden-http.conf']) / 1e6:.1f} MB, "
          f"block-ips.csv {files['block-ips.csv'].count(chr(10)):,} lines")
    store.close()


if __name__ == "__main__":
    main()

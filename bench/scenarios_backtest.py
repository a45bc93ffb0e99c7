"""Backtest every shipped pack on the three labelled scenario sets, in both log formats, side by side.

    python bench/scenarios_backtest.py            # about 5-8 minutes on 2 cores

The tuning set is sample_logs/scenarios.py (the rules are fitted to it); the held-out sets are
sample_logs/heldout.py and sample_logs/heldout3.py (each written independently, the third one of
the abusers who hide their shape and the crowds that look like them; the rules are only checked
against them). The first two are generated over two days and replayed on the second; the third
over seven days (so weekends exist), replayed on the last six. Each is written as nginx ``main``
and as CRProxy ``clf`` (the tuning set has no clf writer: its lines lose referer, user agent and
forwarded-for, which is all clf lacks) and ingested with built-in settings (only ``format`` and
an ASN database) into its own DuckDB file under --workdir. ``rules.backtest.backtest`` then replays
hour by hour with every shipped pack. The same figures come from the CLI on the kept files: the
script prints the ``pullwarden backtest`` command for each one, and ``--verify-cli`` runs them and
compares.

An abuser counts as caught when bans or throttles cover at least 80% of its addresses (a rotator
is caught by a range, not by one address); a reseller only when banned. A legitimate client counts
as hit when any of its addresses is banned or throttled; a throttle of one labelled "throttle-ok"
(heldout3's CI fleet and campus NAT) is allowed and counted apart ("ok").
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUPS = [("CI storm", ("ci-storm", "ci-repull", "ci-bigimage")), ("rotators", ("rotation-v4", "rotation-v6")),
          ("scanner", ("scanner", "tag-scanner")), ("err storm", ("error-storm",))]


def to_clf(line: str) -> str:
    """A `main` line as CRProxy's common log format writes it: no referer, UA or forwarded-for."""
    parts = line.split('"')
    return '"'.join(parts[:3]).rstrip() if len(parts) == 9 else line


def build_asn_db(path: Path, networks: dict[str, dict]) -> Path:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet
    w = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    for cidr, record in networks.items():
        w.insert_network(IPSet([cidr]), record)
    w.to_db_file(str(path))
    return path


def covered(actor, value: str) -> set[str]:
    """The actor's addresses a decision value (address, range or AS number) reaches."""
    if value.isdigit():
        return set(actor.addresses) if str(actor.asn) == value else set()
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return set()                                    # an image or a user: no address
    return {ip for ip in actor.addresses if ipaddress.ip_address(ip) in net}


def judge(actors, pack: dict) -> dict:
    banned, throttled = pack["banned"], pack["throttled"]
    out = {"groups": {}, "resellers": [], "legit_banned": [], "legit_throttled": [], "throttled_ok": []}
    for a in actors:
        b = set().union(*(covered(a, v) for v in banned))
        t = set().union(*(covered(a, v) for v in throttled))
        if not a.abusive:
            if b:
                out["legit_banned"].append(a.name)
            elif t:
                out["throttled_ok" if a.expect == "throttle-ok" else "legit_throttled"].append(a.name)
            continue
        need = max(1, int(0.8 * len(a.addresses)))
        if a.kind.startswith("reseller"):
            out["resellers"].append((a.kind, "banned" if len(b) >= need else
                                     "throttled only" if len(b | t) >= need else "missed"))
            continue
        for label, kinds in GROUPS:
            if a.kind in kinds:
                caught, n = out["groups"].get(label, (0, 0))
                out["groups"][label] = (caught + (len(b | t) >= need), n + 1)
    return out


def datasets(args):
    """(set, format, lines, actors, asn networks, days replayed) for each scenario set and format."""
    from sample_logs import heldout, heldout3, scenarios
    if "tuning" in args.sets:
        lines, actors = scenarios.generate(days=2, seed=args.tuning_seed, scale=args.tuning_scale)
        yield "tuning", "main", lines, actors, scenarios.asn_networks(), (1, 2)
        yield "tuning", "clf", [to_clf(x) for x in lines], actors, scenarios.asn_networks(), (1, 2)
    for fmt in ("main", "clf") if "held-out" in args.sets else ():
        lines, actors = heldout.generate(days=2, seed=args.heldout_seed, scale=args.heldout_scale, fmt=fmt)
        yield "held-out", fmt, lines, actors, heldout.asn_networks(), (1, 2)
    for fmt in ("main", "clf") if "held-out-3" in args.sets else ():
        lines, actors = heldout3.generate(days=7, seed=args.heldout3_seed, scale=args.heldout3_scale, fmt=fmt)
        yield "held-out-3", fmt, lines, actors, heldout3.asn_networks(), (1, 7)


def run_one(workdir: Path, name: str, fmt: str, lines, actors, networks, replay=(1, 2)) -> dict:
    """``replay``: the first and the last day of the log (from 0) to replay, whole UTC days."""
    from core.settings import load
    from core.store import open_store
    from ingest.pipeline import Ingester
    from rules.backtest import backtest
    from rules.engine import load_rules
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("db.duckdb*"):
        f.unlink()
    (d / "access.log").write_text("\n".join(lines) + "\n")
    asn = build_asn_db(d / "asn.mmdb", networks)
    cfg = load(None, {"db": str(d / "db.duckdb"), "asn_db": str(asn), "format": fmt}, environ={})
    store = open_store(cfg.db)
    try:
        t0 = time.monotonic()
        report = Ingester(store, cfg).run([str(d / "access.log")])
        ingest_s = time.monotonic() - t0
        first = store.value("select min(ts) from events")
        day1 = first.replace(hour=0, minute=0, second=0, microsecond=0)
        start, end = day1 + timedelta(days=replay[0]), day1 + timedelta(days=replay[1])
        t0 = time.monotonic()
        bt = backtest(store, cfg, load_rules(store), start, end)
        bt_s = time.monotonic() - t0
        rejects = report.total("rejects")
    finally:
        store.close()
    return {"db": str(d / "db.duckdb"), "start": start, "end": end, "lines": len(lines), "rejects": rejects,
            "ingest_s": ingest_s, "backtest_s": bt_s, "report": bt,
            "packs": {p: judge(actors, r) for p, r in bt["packs"].items()}}


def cli_command(res: dict) -> list[str]:
    return ["pullwarden", "backtest", "--db", res["db"], "--from", res["start"].isoformat(),
            "--to", res["end"].isoformat()]


def verify_cli(res: dict) -> str:
    """The CLI on the kept file, with no site config, must report what the script computed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    out = subprocess.run(cli_command(res) + ["--json"], capture_output=True, text=True, env=env,
                         cwd=Path(res["db"]).parent, check=True).stdout
    cli = json.loads(out)["packs"]
    mine = res["report"]["packs"]
    same = all(cli[p][k] == mine[p][k] for p in mine for k in ("banned", "throttled", "bytes_saved"))
    return "same" if same else "DIFFERENT"


def _of(n: int, total: int) -> str:
    return f"{n} of {total}"


def table(results: list[tuple[str, str, dict]]) -> str:
    head = (f"{'set':<11}{'log':<5}{'pack':<19}" + "".join(f"{g:>10}" for g, _ in GROUPS)
            + f"{'resellers banned':>18}{'legit banned':>14}{'legit thr.':>16}{'GiB saved/served':>19}")
    rows = [head, "-" * len(head)]
    notes = []
    for name, fmt, res in results:
        for pack, j in res["packs"].items():
            cells = "".join(f"{_of(*j['groups'][g]) if g in j['groups'] else '-':>10}" for g, _ in GROUPS)
            rs = j["resellers"]
            banned = sum(s == "banned" for _, s in rs)
            thr = sum(s == "throttled only" for _, s in rs)
            r_cell = f"{banned} of {len(rs)}" + (f" (+{thr} thr)" if thr else "")
            n_legit = sum(1 for _ in res["legit"])
            ok = len(j["throttled_ok"])
            t_cell = f"{len(j['legit_throttled'])}" + (f" (+{ok} ok)" if ok else "")
            p = res["report"]["packs"][pack]
            saved = f"{p['bytes_saved'] / (1 << 30):.0f}/{res['report']['bytes'] / (1 << 30):.0f}"
            rows.append(f"{name:<11}{fmt:<5}{pack:<19}{cells}{r_cell:>18}"
                        f"{_of(len(j['legit_banned']), n_legit):>14}{t_cell:>16}{saved:>19}")
            missed = [f"{k}: {s}" for k, s in rs if s != "banned"]
            hit = sorted({n.split("-")[0] if n.startswith(("light-", "home-")) else n
                          for n in j["legit_banned"] + j["legit_throttled"]}
                         | {f"{n} (throttled, ok)" for n in j["throttled_ok"]})
            if missed or hit:
                notes.append(f"  {name} {fmt} {pack}: " + "; ".join(
                    (["resellers not banned: " + ", ".join(missed)] if missed else [])
                    + (["legitimate hit: " + ", ".join(hit)] if hit else [])))
    return "\n".join(rows + ([""] + notes if notes else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/pullwarden-scenarios", type=Path)
    ap.add_argument("--tuning-seed", type=int, default=1)
    ap.add_argument("--tuning-scale", type=float, default=1.0)
    ap.add_argument("--heldout-seed", default="heldout-a")
    ap.add_argument("--heldout-scale", type=float, default=1.0)
    ap.add_argument("--heldout3-seed", default="third-a")
    ap.add_argument("--heldout3-scale", type=float, default=1.0)
    ap.add_argument("--sets", nargs="+", choices=["tuning", "held-out", "held-out-3"],
                    default=["tuning", "held-out", "held-out-3"])
    ap.add_argument("--verify-cli", action="store_true", help="run `pullwarden backtest --json` on each file and compare")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    results = []
    for name, fmt, lines, actors, networks, replay in datasets(args):
        print(f"{name} {fmt}: {len(lines):,} lines, {len(actors)} actors ...", file=sys.stderr, flush=True)
        res = run_one(args.workdir, f"{name}-{fmt}", fmt, lines, actors, networks, replay)
        res["legit"] = [a.name for a in actors if not a.abusive]
        print(f"  ingest {res['ingest_s']:.1f} s, backtest {res['backtest_s']:.1f} s, rejects {res['rejects']}"
              + (f", CLI {verify_cli(res)}" if args.verify_cli else ""), file=sys.stderr, flush=True)
        results.append((name, fmt, res))
    if args.json:
        print(json.dumps([{"set": n, "format": f, "db": r["db"], "lines": r["lines"], "packs": r["packs"]}
                          for n, f, r in results], default=str))
        return
    print(table(results))
    print("\nThe same replay from the CLI (built-in settings, no pullwarden.toml):")
    for _name, _fmt, res in results:
        print("  " + " ".join(cli_command(res)))


if __name__ == "__main__":
    main()

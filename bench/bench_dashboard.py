"""Dashboard benchmark: every page against `pullwarden serve` over 30 days x 1 M events a day.

    python bench/bench_dashboard.py [--days 30] [--events-per-day 1000000] [--workdir /tmp/pullwarden-bench-dash]

Events are generated inside DuckDB by bench_detect.py's generator (pull sessions of a mirror's
shape: ~100k addresses, 2,000 images over five registries, docker/containerd/podman clients,
storms), their addresses get an AS number and a country, user agents are classified, and
everything is rolled up, as ingest and serve would. The database is kept in --workdir and
reused when it has the asked-for size. Then a real `pullwarden serve` (no sources: nothing
else runs) answers, and the script times:

  api    each request every page makes (dashboard/views/*), three times, median and worst;
  pages  each page of the Streamlit app rendered by streamlit.testing.v1.AppTest against that
         server (what a user waits for after a click: the page's requests and its charts),
         three times after a first warm-up load.

Target (issue 11): every page <= 2 s. There is no peer to run beside it: the figures are
pullwarden's own, printed with PASS or MISS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_detect import GENERATE  # noqa: E402
from core.store import open_store  # noqa: E402

TARGET_PAGE_S = 2.0
END = datetime(2026, 11, 30)


def build(db: Path, days: int, per_day: int) -> dict:
    """The month of events, enriched and rolled up; reused when already there."""
    from core.geodb import GeoDB
    from ingest.enrich import enrich_new
    from rules.rollup import roll_up
    want = days * per_day
    t0 = time.perf_counter()
    store = open_store(str(db))
    try:
        have = store.value("select count(*) from events")
        if have == want and store.value("select count(*) from rollup_state"):
            return {"events": have, "reused": True}
        if have != want:
            store.close()
            for p in (db, Path(f"{db}.wal")):
                p.unlink(missing_ok=True)
            store = open_store(str(db))
            generate(store, days, per_day)
        generated = time.perf_counter() - t0
        t = time.perf_counter()
        store.execute("delete from ip_info")
        store.execute("delete from user_agents")
        # an AS number and a country for every address: 300 networks, 12 countries
        store.execute("""insert into ip_info
            select ip, 64512 + hash(split_part(ip, '.', 1)) % 300, 'AS of ' || split_part(ip, '.', 1),
                   ['CN', 'US', 'DE', 'JP', 'SG', 'HK', 'KR', 'FR', 'GB', 'IN', 'BR', 'NL'][(hash(ip) % 12 + 1)::bigint]
            from (select distinct client_ip as ip from events)""")
        enrich_new(store, GeoDB("", ""))
        enriched = time.perf_counter() - t
        t = time.perf_counter()
        roll_up(store)
        rolled = time.perf_counter() - t
        return {"events": want, "reused": False, "generate_s": round(generated, 1), "enrich_s": round(enriched, 1),
                "rollup_s": round(rolled, 1), "facts_hourly_rows": store.value("select count(*) from facts_hourly")}
    finally:
        store.close()


def generate(store, days: int, per_day: int) -> None:
    """bench_detect's events, ``per_day`` a day for ``days`` days ending at END."""
    # a day at a time: the generator spreads row i over the span as i * span // n, which
    # overflows 64 bits for a month of microseconds times 30 M rows (addresses are hashes of
    # the session number into a few hundred thousand, so many clients come back each day)
    for day in range(days):
        store.execute(GENERATE.replace("range($n) t(i)", "range($n * $day, $n * ($day + 1)) t(i)")
                      .replace("((i * $span) // $n)", "(((i - $n * $day) * $span) // $n)"),
                      {"start": END - timedelta(days=days - day), "n": per_day, "day": day,
                       "span": int(timedelta(days=1).total_seconds() * 1e6) - 1})
        print(f"  day {day + 1}/{days} generated", file=sys.stderr)


def get(base: str, key: str, path: str) -> bytes:
    req = urllib.request.Request(base + path, headers={"X-Api-Key": key})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}


def api_figures(base: str, key: str, repeat: int) -> dict:
    top = json.loads(get(base, key, "/v1/stats/top?by=address&limit=1"))["rows"][0]["entity"]
    paths = ["/v1/stats/overview", "/v1/stats/budget", "/v1/stats/traffic",
             "/v1/stats/traffic?bucket=day&start=2026-11-01&end=2026-11-30",
             "/v1/stats/traffic?registry=ghcr.io&family=containerd", "/v1/stats/traffic?country=DE",
             "/v1/stats/top?by=address", "/v1/stats/top?by=prefix", "/v1/stats/top?by=asn", "/v1/stats/top?by=country",
             "/v1/stats/top?by=family", "/v1/stats/top?by=image", "/v1/stats/top?by=user_agent",
             "/v1/stats/top?by=address&start=2026-11-01&end=2026-11-30",
             f"/v1/stats/entity?kind=address&value={top}", f"/v1/stats/explain?target={top}",
             "/v1/stats/rules", "/v1/stats/images", "/v1/stats/demand", "/v1/stats/decisions?limit=500",
             "/v1/stats/findings?limit=200"]
    return {p: timed(lambda p=p: get(base, key, p), repeat) for p in paths}


def page_figures(base: str, key: str, repeat: int) -> dict:
    """Each page through AppTest (the page's own code, its requests and its charts)."""
    try:
        import streamlit as st
        from streamlit.testing.v1 import AppTest
    except ImportError:
        return {"error": "streamlit is not installed"}
    views = sorted(p.stem for p in (ROOT / "dashboard" / "views").glob("*.py") if not p.stem.startswith("_"))
    if not views:
        return {"error": "no pages in dashboard/views/"}
    os.environ["PULLWARDEN_API_URL"], os.environ["PULLWARDEN_API_KEY"] = base, key
    out = {}
    for view in views:
        def load(view=view):
            st.cache_data.clear()       # a first visit: the page's requests are made, not cached
            at = AppTest.from_file(str(ROOT / "dashboard" / "views" / f"{view}.py"), default_timeout=120)
            at.run()
            if at.exception:
                raise RuntimeError(f"{view}: {at.exception[0].message}")
        try:
            load()                      # warm-up: imports, the first connection
            out[view] = timed(load, repeat)
        except Exception as e:          # a figure, never a crash of the benchmark
            out[view] = {"error": str(e)[:300]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--events-per-day", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pullwarden-bench-dash"))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / "dash.duckdb"
    print(f"building {args.days} days x {args.events_per_day:,} events in {db} ...", file=sys.stderr)
    built = build(db, args.days, args.events_per_day)
    print(f"  {built}", file=sys.stderr)

    from enforcer.keys import create_key
    store = open_store(str(db))
    key = create_key(store, f"bench-{os.getpid()}", "viewer", datetime.utcnow())
    store.close()
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    env["PYTHONPATH"] = str(ROOT)
    log = open(args.workdir / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--db", str(db),
                             "--port", str(port), "--config", str(args.workdir / "empty.toml")],
                            cwd=args.workdir, env=env, stdout=log, stderr=log)
    (args.workdir / "empty.toml").write_text("# built-in defaults only\n")
    try:
        deadline = time.time() + 300
        while True:
            try:
                get(base, key, "/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    sys.exit(f"serve did not start; see {args.workdir / 'serve.log'}")
                time.sleep(0.5)
        time.sleep(3)                       # the first detection pass and publish settle
        print("timing the API ...", file=sys.stderr)
        api = api_figures(base, key, args.repeat)
        print("timing the pages (AppTest) ...", file=sys.stderr)
        pages = page_figures(base, key, args.repeat)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    out = {"build": built, "api": api, "pages": pages, "target_page_s": TARGET_PAGE_S, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"dashboard benchmark: {built['events']:,} events over {args.days} days, serve with its default settings, "
          f"{os.cpu_count()} CPUs")
    print(f"{'request':<62}{'median s':>10}{'worst s':>10}")
    for path, f in api.items():
        print(f"{path:<62}{f['median_s']:>10.3f}{f['max_s']:>10.3f}")
    print(f"{'page (AppTest)':<62}{'median s':>10}{'worst s':>10}  target <= {TARGET_PAGE_S:g} s")
    for view, f in pages.items():
        if not isinstance(f, dict) or "error" in f:
            print(f"{view:<62}  {f if not isinstance(f, dict) else f['error']}")
            continue
        verdict = "PASS" if f["max_s"] <= TARGET_PAGE_S else "MISS"
        print(f"{view:<62}{f['median_s']:>10.3f}{f['max_s']:>10.3f}  {verdict}")


if __name__ == "__main__":
    main()

"""Detection benchmark: a full pass over 7 days of events, then an incremental hourly pass.

    python bench/bench_detect.py [--events 6000000] [--days 7] [--workdir /tmp/pullwarden-bench-detect]
                                 [--mode both|unrestricted|serve] [--no-compare] [--json]

Events are generated inside DuckDB (deterministic: hashes of the row number), shaped like a
mirror's traffic: ~100k addresses with skewed activity, a catalogue of 2,000 images with 3-8
layers, docker/containerd/podman user agents, some X-Forwarded-For, errors and tag listings,
and a few re-pull storms; requests come in pull sessions of eight. The events are generated once
per size into --workdir and copied for each run (60 M take minutes to generate).

Each mode runs in a child process of its own, so that its peak RSS (VmHWM) is its own:
``unrestricted`` (DuckDB's defaults, every core) and ``serve`` (serve's defaults: configure_store,
serve_memory_mb, detect_memory_mb while a pass runs, roll-up in SERVE_BATCH slices as ingest
does, the checkpoint before a full pass: enforcer/jobs.py's own _detect; a pass that had to be
retried with twice the memory is counted). Each reports the roll-up of the week (serve's ingest
does it as the events arrive; main's bench counted it in the full pass), a full pass, then one more hour of
events, its roll-up (serve's ingest does it) and the incremental pass (a fresh pass that judges
the new hour's entities and those whose windows lost an hour: rules/changed.py), with wall and
CPU seconds (the machine may be shared: CPU time is what the pass cost). Unrestricted also runs
a full pass at the same time on the same data (unless --no-compare) and says whether the
incremental pass made the same new decisions. Targets (issue 22): full pass <= 5 s at 6 M and
<= 30 s at 60 M, incremental pass <= 1 s.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import load  # noqa: E402
from core.store import open_store  # noqa: E402
from rules.detect import Fresh, detect, events_top  # noqa: E402
from rules.engine import load_rules  # noqa: E402
from rules.rollup import SERVE_BATCH, roll_up  # noqa: E402

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
    select $start::timestamp + to_microseconds(((i::hugeint * $span) // $n)::bigint) as ts, i // 8 as s, i % 8 as pos,
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


# The hour after the week: the same traffic, its times spread over one more hour.
EXTRA_HOUR = (GENERATE.replace("from range($n) t(i)", "from range($n, $n + $extra) t(i)")
              .replace("((i::hugeint * $span) // $n)", "($span + ((i - $n) * 3600000000) // $extra)"))


def vm_hwm_mb() -> float:
    """This process's own peak RSS (ru_maxrss carries a forked parent's over exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def figures(self) -> dict:
        return {"s": round(self.wall, 2), "cpu_s": round(self.cpu, 2)}


def generated(workdir: Path, events: int, days: int) -> tuple[Path, float | None]:
    """The week's events, generated once per size; (path, seconds it took, None when reused)."""
    db = workdir / f"events-{events}-{days}d.duckdb"
    if db.exists() and not Path(str(db) + ".wal").exists():
        return db, None
    # generated under a name of this run's own and renamed when complete: a run started
    # meanwhile never reads a half-written file, nor deletes the one another run is writing
    part = workdir / f"events-{events}-{days}d.{os.getpid()}.part"
    store = open_store(str(part))
    t = time.perf_counter()
    store.execute(GENERATE, {"start": START, "n": events, "span": span_us(days)})
    store.execute("checkpoint")
    store.close()
    Path(str(part) + ".wal").unlink(missing_ok=True)
    os.replace(part, db)
    return db, time.perf_counter() - t


def span_us(days: int) -> int:
    return int((timedelta(days=days) - timedelta(hours=1)).total_seconds() * 1e6)    # the last hour arrives later


def serve_roll_up(services) -> None:
    """Roll up as serve's ingest runs do: SERVE_BATCH events at a time, and a checkpoint once
    the WAL passes WAL_CHECKPOINT (else the week's rollups wait in the WAL for the checkpoint
    before the full pass, and that pass pays for writing them)."""
    from enforcer import jobs
    from rules.rollup import _roll_up_slice     # one slice at a time, as each ingest run leaves it
    while _roll_up_slice(services.store, SERVE_BATCH):
        if jobs._wal_bytes(services.store) > jobs.WAL_CHECKPOINT:
            services.checkpoint()
    roll_up(services.store, SERVE_BATCH, services.settings)    # the object-store downloads, if any


def child(mode: str, db: str, events: int, days: int, compare: bool) -> dict:
    """One mode's passes over the copy ``db``; its figures."""
    cfg = load(None, {"db": db}, environ={})
    store = open_store(db)
    rules = load_rules(store)
    now = START + timedelta(microseconds=span_us(days))
    last_hour = events // (days * 24)
    out = {"mode": mode}
    if mode == "serve":
        from enforcer import jobs
        from enforcer.service import Services
        jobs.configure_store(store, cfg)
        retried = []
        handler = logging.Handler()
        handler.emit = lambda r: retried.append(r.getMessage()) if "did not fit" in r.getMessage() else None
        logging.getLogger("pullwarden.jobs").addHandler(handler)
        clock = [now]
        services = Services(store, cfg, clock=lambda: clock[0])
        with Timer() as t:
            serve_roll_up(services)
        out["rollup"] = t.figures()
        with Timer() as t:
            full = jobs._detect(services, cfg)
        out["full"] = {**t.figures(), "findings": len(full.findings)}
        with Timer() as t:
            store.execute(EXTRA_HOUR, {"start": START, "n": events, "span": span_us(days), "extra": last_hour})
        out["generate_hour"] = t.figures()
        with Timer() as t:
            serve_roll_up(services)
        out["rollup_hour"] = t.figures()
        clock[0] = now + timedelta(hours=1)
        with Timer() as t:
            hourly = jobs._detect(services, cfg, fresh=True)
        out["incremental"] = {**t.figures(), "findings": len(hourly.findings), "new": len(hourly.new)}
        out["retried"] = len(retried)
        out["memory_mb"] = {"serve": cfg.serve_memory_mb, "detect": cfg.detect_memory_mb}
    else:
        with Timer() as t:
            roll_up(store)
        out["rollup"] = t.figures()
        with Timer() as t:
            full = detect(store, cfg, rules, now)
        out["full"] = {**t.figures(), "findings": len(full.findings)}
        top = events_top(store)
        with Timer() as t:
            store.execute(EXTRA_HOUR, {"start": START, "n": events, "span": span_us(days), "extra": last_hour})
        out["generate_hour"] = t.figures()
        with Timer() as t:
            roll_up(store)
        out["rollup_hour"] = t.figures()
        later = now + timedelta(hours=1)
        with Timer() as t:
            hourly = detect(store, cfg, rules, later, write=not compare,
                            fresh=Fresh(after=top, upto=events_top(store), since=now, last=now))
        out["incremental"] = {**t.figures(), "findings": len(hourly.findings), "new": len(hourly.new)}
        if compare:
            with Timer() as t:
                whole = detect(store, cfg, rules, later, write=False)
            out["full_at_same_time"] = {**t.figures(), "findings": len(whole.findings), "new": len(whole.new)}
            out["same_decisions"] = (sorted((d.rule, d.value) for d in hourly.new)
                                     == sorted((d.rule, d.value) for d in whole.new))
    out["hourly_events"] = last_hour
    out["events"] = store.value("select count(*) from events")
    out["facts_hourly_rows"] = store.value("select count(*) from facts_hourly")
    out["blob_hourly_rows"] = store.value("select count(*) from blob_hourly")
    out["rules"] = len(rules)
    store.close()
    out["peak_rss_mb"] = round(vm_hwm_mb())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=6_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--workdir", default="/tmp/pullwarden-bench-detect")
    ap.add_argument("--mode", choices=["both", "unrestricted", "serve"], default="both")
    ap.add_argument("--no-compare", action="store_true", help="skip the full pass beside the incremental one")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.events, args.days, not args.no_compare)))
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source, gen_s = generated(workdir, args.events, args.days)
    load_avg = os.getloadavg()
    runs = []
    for mode in (["unrestricted", "serve"] if args.mode == "both" else [args.mode]):
        # each run works on a copy of its own (the process id in its name): the generated
        # events are only read, and two benches sharing a workdir do not collide
        db = workdir / f"run-{mode}-{os.getpid()}.duckdb"
        shutil.copyfile(source, db)
        cmd = [sys.executable, __file__, "--child", mode, "--db", str(db), "--events", str(args.events),
               "--days", str(args.days)] + (["--no-compare"] if args.no_compare else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:     # one mode's failure is a figure too: say how it ended
            runs.append({"mode": mode, "failed": done.stderr.strip().splitlines()[-3:]})
        else:
            runs.append(json.loads(done.stdout))
        for p in (db, Path(str(db) + ".wal")):
            p.unlink(missing_ok=True)
    out = {"events": args.events, "days": args.days, "generate_s": gen_s and round(gen_s, 1),
           "load_before": [round(x, 2) for x in load_avg], "load_after": [round(x, 2) for x in os.getloadavg()],
           "cpus": os.cpu_count(), "runs": runs}
    if args.json:
        print(json.dumps(out))
        return
    print(f"detection benchmark: {args.events:,} events over {args.days} days, "
          f"{next((r['rules'] for r in runs if 'rules' in r), '?')} rules, "
          f"{os.cpu_count()} CPUs, load {out['load_before'][0]} -> {out['load_after'][0]}"
          + (f" (generated in {gen_s:.0f} s)" if gen_s else ""))
    for r in runs:
        if "failed" in r:
            print(f"  {r['mode']}: FAILED: {' / '.join(r['failed'])}")
            continue
        full, inc = r["full"], r["incremental"]
        print(f"  {r['mode']}: roll-up of the week {r['rollup']['s']:.2f} s ({r['rollup']['cpu_s']:.2f} s CPU); "
              f"full pass {full['s']:.2f} s ({full['cpu_s']:.2f} s CPU), {full['findings']} findings")
        print(f"    next hour ({r['hourly_events']:,} events): roll-up {r['rollup_hour']['s']:.2f} s; "
              f"incremental pass {inc['s']:.2f} s ({inc['cpu_s']:.2f} s CPU), {inc['findings']} findings")
        if "full_at_same_time" in r:
            print(f"    full pass at the same time {r['full_at_same_time']['s']:.2f} s; same new decisions: "
                  f"{r['same_decisions']}")
        if "retried" in r:
            print(f"    passes retried with twice detect_memory_mb: {r['retried']}")
        print(f"    peak RSS {r['peak_rss_mb']} MB; facts_hourly {r['facts_hourly_rows']:,} rows, "
              f"blob_hourly {r['blob_hourly_rows']:,}")


if __name__ == "__main__":
    main()

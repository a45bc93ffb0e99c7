"""Hostile soak: `pullwarden serve` tailing a growing log while it is attacked, to see that no
line is lost or stored twice, that the proxies' policy polls are answered throughout, and that
no job gets stuck (issue 19, items 1 and 6).

    python bench/soak_hostile.py                  # 10 minutes
    python bench/soak_hostile.py --minutes 2      # a smoke run
    python bench/soak_hostile.py --json           # one JSON object at the end

serve runs on the wall clock with default settings, its open-files limit set to 1024 (soft and
hard: systemd's default soft limit, with no room to raise it; --nofile). The script writes
access.log at --rate lines a second (bench/soak.py's Log) and, at the same time, runs

- --slow connections that send one header byte every 2 s and never finish a head (slowloris),
  each opened again when serve closes it;
- --posts loops of keyless POSTs announcing 173 MB and sending as fast as serve takes them;
- a viewer key hammering GET /v1/stats/backtest and /v1/stats/top?by=user_agent&limit=1000
  (the pair that wedged serve's connection in issue 19), --viewers threads;
- a proxy polling GET /v1/policy with If-None-Match on a new connection every 100 ms, as the
  agent does (its interval is longer than the keep-alive).

Every minute it prints lines written, read and stored (from /metrics), lost (read, neither
stored nor rejected) and stored twice, the polls of that minute (count, failures, p99), serve's
RSS, the viewer's answers by status, /healthz's status and any job in error or late (its last
success older than three of its intervals plus a minute). At the end it lets serve catch up and
prints a summary; the exit status is 1 when a line was lost or stored twice, a poll failed, the
polls' p99 was over --p99-ms, a job was in error or late at the end, or the viewer got a 5xx.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from soak import Log, free_port, metrics, rss_mb  # noqa: E402
from tests.hostile_clients import BigPosts, Slowloris  # noqa: E402

POLL_EVERY = 0.1
JOBS = {"ingest": "ingest_interval", "detect": "detect_interval", "fresh": "detect_fresh_interval",
        "publish": "publish_interval"}       # the jobs that must keep running, and their interval settings


def wall() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def request(where, method: str, path: str, headers: dict, timeout: float) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(*where, timeout=timeout)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


class Viewer(threading.Thread):
    """The two month-wide reads, one after the other, again and again."""

    PATHS = ("/v1/stats/backtest", "/v1/stats/top?by=user_agent&limit=1000")

    def __init__(self, where, key: str, stop: threading.Event, answers: Counter, lock: threading.Lock):
        super().__init__(daemon=True)
        self.where, self.key, self.stop, self.answers, self.lock = where, key, stop, answers, lock

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.PATHS:
                try:
                    code = request(self.where, "GET", path, {"X-Api-Key": self.key}, 300)[0]
                except OSError as e:
                    code = type(e).__name__
                with self.lock:
                    self.answers[f"{path.split('?')[0].rsplit('/', 1)[1]} {code}"] += 1


class Poller:
    """The agent's poll, on a new connection every POLL_EVERY seconds, from a process of its own
    (so that the attackers' threads here do not make its answers look slower than they are)."""

    def __init__(self, where, key: str):
        ctx = multiprocessing.get_context("fork")       # forked before any other thread starts
        self.queue, self.stop = ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=self._run, args=(where, key, self.queue, self.stop), daemon=True)
        self.times: list[float] = []        # this minute's, taken by take()
        self.all: list[float] = []
        self.failed: list[str] = []

    def start(self) -> None:
        self.proc.start()

    @staticmethod
    def _run(where, key, queue, stop) -> None:
        etag = ""
        while not stop.is_set():
            t = time.perf_counter()
            error = None
            try:
                code, _, headers = request(where, "GET", "/v1/policy", {"X-Api-Key": key, "If-None-Match": etag}, 5)
                if code == 200:
                    etag = headers.get("etag", "")
                elif code != 304:
                    error = f"{wall():%H:%M:%S} status {code}"
            except OSError as e:
                error = f"{wall():%H:%M:%S} {e!r}"
            queue.put((time.perf_counter() - t, error))
            stop.wait(POLL_EVERY)

    def take(self) -> list[float]:
        """The polls answered since the last call."""
        out = []
        while True:
            try:
                took, error = self.queue.get_nowait()
            except queue.Empty:
                break
            out.append(took)
            if error:
                self.failed.append(error)
        self.all += out
        return out

    def close(self) -> None:
        self.stop.set()
        self.proc.join(10)


def p99(times: list[float]) -> float | None:
    if not times:
        return None
    times = sorted(times)
    return times[min(len(times) - 1, int(len(times) * 0.99))]


def late_jobs(health: dict, cfg) -> dict[str, str]:
    """Jobs in error, or whose last success is older than three of their intervals plus a minute."""
    out = {}
    now = wall()
    for name, job in health.get("jobs", {}).items():
        if job.get("error"):
            out[name] = job["error"][:120]
        elif name in JOBS and job.get("last_ok"):
            age = (now - datetime.fromisoformat(job["last_ok"]).replace(tzinfo=None)).total_seconds()
            if age > 3 * getattr(cfg, JOBS[name]) + 60:
                out[name] = f"last ok {age:.0f} s ago"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="How long to feed and attack serve (default 10).")
    ap.add_argument("--rate", type=float, default=1000.0, help="Log lines a second (default 1000).")
    ap.add_argument("--slow", type=int, default=1100, help="Slow-header connections (default 1100).")
    ap.add_argument("--posts", type=int, default=3, help="Keyless 173 MB POST loops (default 3).")
    ap.add_argument("--viewers", type=int, default=1, help="Threads of viewer reads (default 1).")
    ap.add_argument("--nofile", type=int, default=1024,
                    help="serve's open-files limit, soft and hard (default 1024; 0: this shell's).")
    ap.add_argument("--p99-ms", type=float, default=50.0, help="The polls' p99 to stay under (default 50).")
    ap.add_argument("--workdir", default=None,
                    help="Folder for the log and the database (default: a new temporary one).")
    ap.add_argument("--json", action="store_true", help="One JSON object at the end (the minute lines go to stderr).")
    args = ap.parse_args()

    from core.settings import load
    from core.store import open_store
    from enforcer.keys import create_key

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))       # this side holds --slow sockets
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pullwarden-hostile-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    db = work / "soak.duckdb"
    store = open_store(str(db))
    keys = {role: create_key(store, f"{role}-{os.getpid()}", role, wall()) for role in ("proxy", "viewer")}
    store.close()
    port = free_port()
    url, where = f"http://127.0.0.1:{port}", ("127.0.0.1", port)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")},
           "PULLWARDEN_DB": str(db), "PULLWARDEN_SOURCES": str(logs / "access.log*"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cfg = load(None, {}, environ=env)
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))) if args.nofile else None
    serve_log = open(work / "serve.log", "w")  # noqa: SIM115 - serve writes it till the end
    serve = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port)],
                             env=env, cwd=work, stdout=serve_log, stderr=subprocess.STDOUT, preexec_fn=limit)
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    say(f"hostile soak: {work}, serve pid {serve.pid} on {url} (open files {args.nofile or 'inherited'}), "
        f"{args.rate:.0f} lines/s for {args.minutes:g} min; {args.slow} slow connections, {args.posts} keyless "
        f"173 MB POST loops, {args.viewers} viewer thread(s), a poll every {POLL_EVERY * 1000:.0f} ms")
    deadline = time.time() + 60
    while True:
        try:
            metrics(url, keys["viewer"])
            break
        except OSError:
            if serve.poll() is not None or time.time() > deadline:
                raise SystemExit(f"serve did not start: see {work / 'serve.log'}")
            time.sleep(0.5)

    feed = Log(logs, wall, args.rate, int(args.rate * 3600))
    stop = threading.Event()
    answers, answers_lock = Counter(), threading.Lock()
    poller = Poller(where, keys["proxy"])
    poller.start()
    slow = Slowloris(where, args.slow, 2.0, stop)
    posts = [BigPosts(where, stop) for _ in range(args.posts)]
    viewers = [Viewer(where, keys["viewer"], stop, answers, answers_lock) for _ in range(args.viewers)]
    for t in (slow, *posts, *viewers):
        t.start()
    rows: list[dict] = []
    say(f"{'min':>4} {'written':>9} {'read':>9} {'stored':>9} {'lost':>5} {'twice':>6} {'polls':>6} {'failed':>6} "
        f"{'p99 ms':>7} {'RSS MiB':>8} health / late jobs / viewer answers")

    def sample(minute: float) -> dict:
        m = metrics(url, keys["viewer"])
        health = json.loads(request(where, "GET", "/healthz", {}, 30)[1])
        times = poller.take()
        with answers_lock:
            seen = dict(answers)
        row = {"minute": round(minute, 1), "written": feed.written, "read": int(m["pullwarden_ingest_lines_total"]),
               "stored": int(m["pullwarden_ingest_events_total"]),
               "rejected": int(m["pullwarden_ingest_rejects_total"]),
               "polls": len(times), "failed": len(poller.failed),
               "p99_ms": round(p99(times) * 1000, 1) if times else None, "rss_mib": round(rss_mb(serve.pid), 1),
               "health": health.get("status"), "late": late_jobs(health, cfg), "viewer": seen}
        row["lost"] = row["read"] - row["stored"] - row["rejected"]
        row["twice"] = max(0, row["stored"] + row["rejected"] - row["written"])
        rows.append(row)
        say(f"{row['minute']:>4g} {row['written']:>9,} {row['read']:>9,} {row['stored']:>9,} {row['lost']:>5} "
            f"{row['twice']:>6} {row['polls']:>6} {row['failed']:>6} {row['p99_ms'] or 0:>7.1f} {row['rss_mib']:>8.1f} "
            f"{row['health']} {row['late'] or ''} {seen}")
        return row

    t0 = time.time()
    next_sample = t0 + 60
    try:
        while (now := time.time()) < t0 + args.minutes * 60:
            feed.write_until(int((now - t0) * args.rate))
            if serve.poll() is not None:
                raise SystemExit(f"serve exited ({serve.returncode}): see {work / 'serve.log'}")
            if now >= next_sample:
                sample((now - t0) / 60)
                next_sample += 60
            time.sleep(0.1)
        stop.set()
        poller.close()
        feed.close()
        caught = time.time() + 180          # every line read: let serve catch up
        while time.time() < caught and metrics(url, keys["viewer"])["pullwarden_ingest_lines_total"] < feed.written:
            time.sleep(2)
        last = sample((time.time() - t0) / 60)
    finally:
        stop.set()
        poller.close()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(90)
        except subprocess.TimeoutExpired:
            serve.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    everything = p99(poller.all)
    summary = {
        "workdir": str(work), "minutes": args.minutes, "lines_per_second": args.rate, "slow": args.slow,
        "posts": args.posts, "viewers": args.viewers, "nofile": args.nofile,
        "written": feed.written, "read": last["read"], "stored": last["stored"], "rejected": last["rejected"],
        "lost": max(0, feed.written - last["stored"] - last["rejected"]),
        "duplicated": max(0, last["stored"] + last["rejected"] - feed.written),
        "polls": len(poller.all), "polls_failed": len(poller.failed), "failures": poller.failed[:20],
        "poll_p99_ms": round(everything * 1000, 1) if everything else None,
        "poll_max_ms": round(max(poller.all) * 1000, 1) if poller.all else None,
        "slow_reopened": slow.reopened, "keyless_mib_sent": round(sum(p.sent for p in posts) / 2**20),
        "viewer_answers": last["viewer"], "rss_mib_max": max(r["rss_mib"] for r in rows),
        "rss_mib_end": last["rss_mib"], "late_or_failing_jobs_seen": sorted({j for r in rows for j in r["late"]}),
        "late_or_failing_jobs_at_end": last["late"], "serve_exit": serve.returncode, "rows": rows,
    }
    bad = [what for what, yes in (
        ("lines lost", summary["lost"]), ("lines stored twice", summary["duplicated"]),
        ("polls failed", summary["polls_failed"]),
        (f"poll p99 over {args.p99_ms:g} ms", (summary["poll_p99_ms"] or 0) > args.p99_ms),
        ("jobs in error or late at the end", summary["late_or_failing_jobs_at_end"]),
        ("viewer answers 5xx", sum(n for what, n in last["viewer"].items() if what.split()[-1].startswith("5"))))
        if yes]
    summary["problems"] = bad
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\nwritten {summary['written']:,} lines, stored {summary['stored']:,}, "
              f"rejected {summary['rejected']:,}, "
              f"lost {summary['lost']:,}, stored twice {summary['duplicated']:,}")
        print(f"polls: {summary['polls']:,}, failed {summary['polls_failed']}, p99 {summary['poll_p99_ms']} ms, "
              f"max {summary['poll_max_ms']} ms"
              + (f"; first failures {summary['failures'][:3]}" if poller.failed else ""))
        print(f"attack: slow connections cut off and reopened {summary['slow_reopened']:,} times; keyless POST bytes "
              f"sent {summary['keyless_mib_sent']:,} MiB; viewer answers {summary['viewer_answers']}")
        print(f"serve RSS: at most {summary['rss_mib_max']:.1f} MiB, {summary['rss_mib_end']:.1f} MiB at the end; jobs "
              f"late or failing at some minute: {summary['late_or_failing_jobs_seen'] or 'none'}; serve exited with "
              f"{serve.returncode}")
        print("problems: " + ("; ".join(bad) if bad else "none"))
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Freshness benchmark: from the log line that completes a rule's evidence to the decision in the
policy that a live `pullwarden serve` publishes, at default settings.

    python bench/bench_freshness.py                   # 6 scanner and 2 CI storm episodes, about 5 minutes
    python bench/bench_freshness.py --episodes 10 --storms 0 --json

1. A fresh DuckDB file in a temporary work dir, a proxy and a viewer key; a log with
   --history-lines (300,000) lines of background pulls over the last 24 hours (seeded), which
   serve reads as a backlog on its first start; a TOML config that sets only `db`, `sources`,
   `host` and `port` (ingest_interval, detect_interval, detect_fresh_interval: the defaults).
2. `pullwarden serve --config CFG` as a child process. Once its first full detection pass has
   judged the backlog, a writer thread appends background pulls with the current time at
   --rate (200) lines/s; it is the only writer of the log, and writes the episodes' lines too.
3. Each scanner episode: a new address lists the tags of 49 repositories (answered 404) in a
   burst; the script waits until a pass has judged them (/metrics
   pullwarden_detection_newest_event_timestamp_seconds) and checks that there is no ban yet;
   it then waits a seeded random 0-10 s (so that the evidence lands anywhere in the ingest and
   fresh-pass schedule), appends the 50th tags list and notes the wall time once it is flushed,
   and polls GET /v1/policy (proxy key, If-None-Match) every 0.1 s until the address is in
   `bans`: the episode's time. Rule tag-scanner: 50 tags lists, half of the requests.
4. Each CI storm episode: the same, for a CI job that re-pulls an image without a layer cache
   4 times an hour: its 11 past hours are written at once with their old times (a storm takes
   hours by definition; ci-repull-storm wants blob downloads in 12 clock hours), then, once
   judged and not throttled, one more pull with the current time: the time runs until the
   address is in the policy's `assignments` (throttle).

Meanwhile a proxy polls GET /v1/policy with its ETag --poll-rate (20) times a second, and the
304 answers are timed. Prints each episode, the median and the worst time against the 60 s
target with PASS or MISS, the server's detection lag and last pass (/metrics), the 304 path's
latency and the server's CPU use. Everything it starts is stopped at the
end, on error or Ctrl-C too. The code measured is the code beside this script.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_enforcer import (HOST, BenchError, Children, child_env, free_port, http_json,  # noqa: E402
                            proc_cpu_seconds, pullwarden_cmd, run, say, wait_for)

TARGET_SECONDS = 60.0
STAMP = "%d/%b/%Y:%H:%M:%S +0000"
IMAGES = ["library/nginx", "library/python", "library/alpine", "library/golang", "bitnami/redis",
          "prometheus/node-exporter", "library/postgres", "library/node"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def line(t: datetime, ip: str, path: str, status: int = 200, nbytes: int = 1500, ua: str = "docker/27.3.1") -> str:
    return f'{ip} - - [{t.strftime(STAMP)}] "GET {path} HTTP/1.1" {status} {nbytes} "-" "{ua}"\n'


def pull(t: datetime, ip: str, image: str, blobs: int = 3, ua: str = "docker/27.3.1") -> list[str]:
    out = [line(t, ip, f"/v2/{image}/manifests/latest", ua=ua)]
    return out + [line(t, ip, f"/v2/{image}/blobs/sha256:{zlib.crc32(f'{image}{b}'.encode()):064x}", nbytes=20 << 20, ua=ua)
                  for b in range(blobs)]


class Background:
    """Light pullers: a few thousand addresses, a pull now and then each (seeded)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def lines(self, t: datetime) -> list[str]:
        r = self.rng
        ip = f"100.{64 + r.randrange(8)}.{r.randrange(256)}.{1 + r.randrange(50)}"
        return pull(t, ip, r.choice(IMAGES), blobs=r.randrange(1, 4), ua=f"docker/2{r.randrange(8)}.0.{r.randrange(9)}")


class Writer(threading.Thread):
    """The one writer of the tailed log: background pulls at `rate` lines/s, and the episodes'
    lines when asked, each flushed before the wall time of the write is noted."""

    TICK = 0.1

    def __init__(self, path: Path, rate: int, background: Background):
        super().__init__(name="writer", daemon=True)
        self.path, self.rate, self.background = path, rate, background
        self.lock = threading.Lock()
        self.queue: list[tuple[list[str], threading.Event, list]] = []
        self.halt = threading.Event()
        self.lines = 0

    def write(self, lines: list[str]) -> float:
        """Append these lines (after the background written so far); the wall time once flushed."""
        done, out = threading.Event(), []
        with self.lock:
            self.queue.append((lines, done, out))
        done.wait(30)
        return out[0]

    def run(self) -> None:
        with open(self.path, "a") as f:
            due = time.monotonic()
            while not self.halt.is_set():
                block: list[str] = []
                while len(block) < self.rate * self.TICK:
                    block += self.background.lines(utcnow())
                f.write("".join(block))
                self.lines += len(block)
                with self.lock:
                    asked, self.queue = self.queue, []
                for lines, _, _ in asked:
                    f.write("".join(lines))
                f.flush()
                flushed = time.time()
                for _, done, out in asked:
                    out.append(flushed)
                    done.set()
                due += self.TICK
                self.halt.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


class Poller(threading.Thread):
    """A proxy polling the policy with its ETag, `rate` times a second: the 304 path's latency
    while the passes run (what the jobs' lower priority must protect)."""

    def __init__(self, base: str, key: str, rate: float):
        super().__init__(name="poller", daemon=True)
        self.base, self.key, self.rate = base, key, rate
        self.halt = threading.Event()
        self.etag, self.latencies, self.fetches = "", [], 0

    def run(self) -> None:
        due = time.monotonic()
        while not self.halt.is_set():
            req = urllib.request.Request(self.base + "/v1/policy", headers={"X-Api-Key": self.key,
                                                                             "If-None-Match": self.etag})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
                    self.etag, self.fetches = r.headers.get("ETag", ""), self.fetches + 1
            except urllib.error.HTTPError as e:
                if e.code == 304:
                    self.latencies.append(time.perf_counter() - t)
            except OSError:
                pass
            due += 1 / self.rate
            self.halt.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> dict:
        self.halt.set()
        self.join(15)
        ms = sorted(x * 1000 for x in self.latencies)
        if not ms:
            return {"polls_304": 0}
        return {"polls_304": len(ms), "fetches": self.fetches, "p50_ms": ms[len(ms) // 2],
                "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "max_ms": ms[-1]}


class Server:
    def __init__(self, base: str, proxy_key: str, viewer_key: str):
        self.base, self.proxy_key, self.viewer_key = base, proxy_key, viewer_key
        self.etag, self.policy = "", {}

    def metrics(self) -> dict[str, float]:
        req = urllib.request.Request(self.base + "/metrics", headers={"X-Api-Key": self.viewer_key})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
        return {m.group(1) + (m.group(2) or ""): float(m.group(3))
                for m in re.finditer(r"^(pullwarden_detection_\w+)(\{[^}]*\})? (\S+)$", text, re.M)}

    def judged_up_to(self) -> float:
        v = self.metrics().get("pullwarden_detection_newest_event_timestamp_seconds", float("nan"))
        return v if v == v else 0.0

    def current(self) -> dict:
        """The policy, as a proxy polls it: a 304 while it has not changed."""
        req = urllib.request.Request(self.base + "/v1/policy", headers={"X-Api-Key": self.proxy_key,
                                                                         "If-None-Match": self.etag})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                self.policy, self.etag = json.loads(r.read()), r.headers.get("ETag", "")
        except urllib.error.HTTPError as e:
            if e.code != 304:
                raise
        return self.policy


def wait_judged(server: Server, written: float, proc, log: Path, timeout: float = 120) -> None:
    """Until a pass has judged what was written at wall time ``written``: the background lines
    written after it carry later times (whole seconds in the log), so a pass that judged an
    event 2 s younger judged everything before it in the file."""
    wait_for("a pass judging the evidence so far", lambda: server.judged_up_to() >= written + 2, proc, log, timeout)


def episode(kind: str, n: int, server: Server, writer: Writer, rng: random.Random, proc, log: Path) -> dict:
    if kind == "scanner":
        ip, section = f"192.0.2.{n + 1}", "bans"
        evidence = [line(utcnow(), ip, f"/v2/scan{n}/repo{i}/tags/list", 404, 19, "Go-http-client/1.1") for i in range(49)]
    else:
        ip, section = f"198.18.{n}.20", "assignments"
        hour = utcnow().replace(minute=0, second=0, microsecond=0)
        evidence = [x for h in range(11, 0, -1) for k in range(4)
                    for x in pull(hour - timedelta(hours=h) + timedelta(minutes=15 * k), ip, "library/python",
                                  ua="docker/24.0.7")]
    wait_judged(server, writer.write(evidence), proc, log)
    if f"ip:{ip}" in server.current().get(section, {}):
        raise BenchError(f"{kind} {ip} is in the policy before its evidence is complete")
    time.sleep(rng.uniform(0, 10))
    now = utcnow()
    last = ([line(now, ip, f"/v2/scan{n}/repo49/tags/list", 404, 19, "Go-http-client/1.1")] if kind == "scanner"
            else pull(now, ip, "library/python", ua="docker/24.0.7"))
    written = writer.write(last)
    while f"ip:{ip}" not in server.current().get(section, {}):
        if time.time() - written > 3 * TARGET_SECONDS:
            return {"kind": kind, "address": ip, "seconds": None}
        if proc.poll() is not None:
            raise BenchError(f"serve exited with {proc.returncode}; see {log}")
        time.sleep(0.1)
    took = time.time() - written
    entry, m = server.policy[section][f"ip:{ip}"], server.metrics()
    last = next(((k.split('"')[1], v) for k, v in m.items() if k.startswith("pullwarden_detection_pass_seconds")),
                (None, None))
    return {"kind": kind, "address": ip, "seconds": took, "rule": entry["rule"],
            "lag": m.get("pullwarden_detection_lag_seconds"), "last_pass": last[0], "last_pass_seconds": last[1]}


def history(path: Path, lines: int, background: Background) -> None:
    """``lines`` of background pulls spread over the 24 hours before now, in time order."""
    now, out, n = utcnow(), [], 0
    with open(path, "w") as f:
        while n < lines:
            t = now - timedelta(hours=24) + timedelta(hours=24) * n / lines
            block = background.lines(t)
            out += block
            n += len(block)
            if len(out) > 50_000:
                f.write("".join(out))
                out = []
        f.write("".join(out))


def bench(args, workdir: Path, children: Children) -> dict:
    db, cfg, log, serve_log = workdir / "fresh.duckdb", workdir / "serve.toml", workdir / "tailed.log", workdir / "serve.log"
    background = Background(args.seed)
    say(f"writing {args.history_lines:,} lines of background over the last 24 h ...")
    history(log, args.history_lines, background)
    port = free_port()
    cfg.write_text(f'db = {json.dumps(str(db))}\nsources = [{json.dumps(str(log))}]\nhost = "{HOST}"\nport = {port}\n')
    env = child_env()
    keys = {role: json.loads(run(pullwarden_cmd() + ["keys", "create", "--role", role, "--name", f"bench-{role}",
                                                     "--config", str(cfg), "--json"], workdir / "setup.log",
                                 env=env, cwd=workdir).strip().splitlines()[-1])["key"] for role in ("proxy", "viewer")}
    base = f"http://{HOST}:{port}"
    say(f"starting `pullwarden serve --config {cfg}` on {base} (default intervals) ...")
    proc = children.start("pullwarden serve", pullwarden_cmd() + ["serve", "--config", str(cfg)], serve_log,
                          env=env, cwd=workdir)
    server = Server(base, keys["proxy"], keys["viewer"])
    writer = Writer(log, args.rate, background)
    poller = Poller(base, keys["proxy"], args.poll_rate)
    result: dict = {"episodes": []}
    try:
        wait_for("serve /healthz", lambda: http_json(base + "/healthz"), proc, serve_log, 120)
        wait_for("the first full pass over the backlog",
                 lambda: server.metrics().get("pullwarden_detection_last_full_pass_timestamp_seconds", 0) > 0,
                 proc, serve_log, 600)
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        writer.start()
        poller.start()
        say(f"appending {args.rate} lines/s of background; {args.episodes} scanner and {args.storms} storm episodes")
        rng = random.Random(args.seed)
        kinds = ["scanner"] * args.episodes + ["storm"] * args.storms
        for n, kind in enumerate(kinds):
            e = episode(kind, n, server, writer, rng, proc, serve_log)
            result["episodes"].append(e)
            shown = f"{e['seconds']:.1f} s" if e["seconds"] is not None else "no decision"
            say(f"  {n + 1}/{len(kinds)} {kind:7s} {e['address']:15s} {shown} ({e.get('rule', '-')}); "
                f"detection lag {e.get('lag')} s; last pass {e.get('last_pass')} {e.get('last_pass_seconds')} s")
        result["cpu_share"] = (proc_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        result["lines_written"] = writer.lines
    finally:
        writer.stop()
        result["policy_304"] = poller.stop() if poller.is_alive() else {"polls_304": 0}
        children.stop(proc)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench_freshness.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=6, help="scanner episodes (default 6; at least 5 are judged)")
    ap.add_argument("--storms", type=int, default=2, help="CI storm episodes (default 2)")
    ap.add_argument("--rate", type=int, default=200, help="background lines/s appended meanwhile (default 200)")
    ap.add_argument("--history-lines", type=int, default=300_000,
                    help="background lines over the last 24 h, read as a backlog at the start (default 300,000)")
    ap.add_argument("--poll-rate", type=float, default=20,
                    help="policy polls/s with the current ETag meanwhile, timed (default 20)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pullwarden-bench-freshness-"))
    workdir.mkdir(parents=True, exist_ok=True)
    children = Children()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        result = bench(args, workdir, children)
    except KeyboardInterrupt:
        children.stop_all()
        sys.exit("bench_freshness: interrupted; every process it started was stopped")
    except BenchError as e:
        children.stop_all()
        sys.exit(f"bench_freshness: {e}")
    finally:
        children.stop_all()
    times = [e["seconds"] for e in result["episodes"]]
    done = [t for t in times if t is not None]
    result["median_seconds"] = statistics.median(done) if done else None
    result["worst_seconds"] = None if len(done) < len(times) or not done else max(done)
    result["pass"] = len(done) == len(times) >= 5 and max(done) <= TARGET_SECONDS
    result["workdir"] = str(workdir)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    print(f"freshness: {len(times)} episodes on a live `pullwarden serve` at default settings "
          f"(ingest_interval 10 s, detect_fresh_interval 5 s, detect_interval 300 s), {args.rate} lines/s beside")
    for kind in ("scanner", "storm"):
        ts = [e["seconds"] for e in result["episodes"] if e["kind"] == kind]
        if ts:
            shown = ", ".join("-" if t is None else f"{t:.1f}" for t in ts)
            print(f"  {kind:8s} evidence complete -> decision in /v1/policy, s: {shown}")
    worst = "no decision in one" if result["worst_seconds"] is None else f"{result['worst_seconds']:.1f} s"
    median = "-" if result["median_seconds"] is None else f"{result['median_seconds']:.1f} s"
    print(f"  median {median}, worst {worst}; target <= {TARGET_SECONDS:.0f} s over >= 5 episodes: "
          f"{'PASS' if result['pass'] else 'MISS'}")
    p = result["policy_304"]
    if p.get("polls_304"):
        print(f"  meanwhile a proxy's policy polls: {p['polls_304']:,} answered 304, p50 {p['p50_ms']:.1f} ms, "
              f"p99 {p['p99_ms']:.1f} ms, max {p['max_ms']:.1f} ms ({p['fetches']} new versions fetched)")
    print(f"  serve used {result['cpu_share']:.0%} of one core meanwhile; work dir {workdir}")


if __name__ == "__main__":
    main()

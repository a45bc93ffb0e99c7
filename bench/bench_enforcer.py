"""Enforcer benchmark: `pullwarden serve` against CrowdSec's LAPI, 100,000 bans, on loopback.

    apt-get install -y wrk curl crowdsec   # crowdsec's post-install fails offline: that is fine
    pip install -e '.[test]'
    python bench/bench_enforcer.py                      # about 2-3 minutes with the defaults
    python bench/bench_enforcer.py --duration 5 --skip-crowdsec
    python bench/bench_enforcer.py --json > result.json

What a proxy fleet and CrowdSec bouncers do to the enforcer, measured with `wrk` (a load
generator in C, run as a separate process) and `curl`, against servers started by this script
on 127.0.0.1 only. Nothing leaves the machine.

pullwarden, in order:

  1. A fresh DuckDB file in the work dir: `pullwarden keys create --role proxy` (which also
     creates the schema), then --decisions (100,000) active bans inserted with one SQL
     INSERT ... SELECT from range(N): addresses 10.0.0.0, 10.0.0.1, ..., 24 h long.
  2. A seeded nginx log of --lines (2,000,000) lines from bench/genlogs.py over the two days
     up to the start of the current hour (kept in the work dir and reused within the hour:
     serve judges at the wall clock, and a log from the past gives its detection passes
     nothing to judge), copied beside the file that the server tails, which starts empty: a
     TOML config sets `sources` to it, `ingest_interval = 1`, `detect_interval`
     (--detect-interval, 30 s: a full pass within the measured phases), `db` and a free `port`.
  3. `pullwarden serve --config CFG` as a child process (it owns the DuckDB file). Once
     GET /healthz answers, the copy is renamed onto the tailed file (serve starts its jobs
     before its API: a backlog there from the start was partly read before the clock
     started), and the script waits for the first ingest run (the whole log, a catch-up:
     timed from the start of the run that read it, table ingest_runs) to end,
     then starts appending lines to the tailed file at --feed-rate lines/s (default 20,000,
     taken from the generated log, round and round, stamped with the wall clock), so that an
     ingest run is under way during the load and the fresh detection passes judge traffic of
     the current hour; each row shows what share of its time an ingest and a detection pass
     were running. After the run: the detection passes (table detect_runs) by kind, their
     seconds, findings and decisions, and the highest RSS sampled during one.
  4. The measurements:
       policy 304   wrk, --duration s: GET /v1/policy with X-Api-Key, Accept-Encoding: gzip and
                    If-None-Match set to the current ETag (a proxy polling an unchanged
                    policy); when detection publishes a version, each connection takes it
                    once (a 200) and polls with its ETag from then on.
                    Targets: >= 3,000 requests/s and latency p99 < 10 ms.
       delta polls  one GET /v1/decisions/stream?startup=true (so the key has a cursor),
                    then wrk, --duration s: GET /v1/decisions/stream?startup=false
                    (a bouncer polling with nothing new). Target: >= 1,000 requests/s.
       start-up     --startup-runs (3) times, curl: GET /v1/decisions/stream?startup=true,
                    the whole body; wall time (time_total), time to first byte, bytes, and
                    the number of decisions in it (parsed). Target: median <= 0.5 s.
       with dashboard  the policy 304 run again while --dashboard-sessions (5) dashboard users
                    click through the pages: each session, a thread of this script with a viewer
                    key, requests what each page of the dashboard requests (overview, budget,
                    traffic, top talkers by address, prefix and ASN, an entity, rules, images,
                    demand, decisions), one page after another with --think seconds (1) between
                    pages. The targets of the 304 path must still hold; page load times are shown.
       memory       the server's VmRSS and VmHWM (peak) from /proc/PID/status, before and
                    after. Target: VmHWM < 300 MB after the start-up streams. The peak
                    covers the whole process life, the initial ingest included; the rows
                    show it before the streams too, so the stream's own share is visible.
                    VmRSS is also sampled every 0.2 s: the highest sample of each phase of
                    the script, the phase of the peak and whether ingest or a detection pass
                    ran within a second of it (all samples: memory-timeline.tsv in the work dir).

CrowdSec (Debian package `crowdsec`, 1.4.6 on bookworm), the same way, in the same run:
its local API alone (`crowdsec -c CFG -no-cs`: no agent, no hub, no Central API, no
Prometheus listener) from a scratch copy of /etc/crowdsec/config.yaml with every path in
the work dir and listen_uri on a free loopback port; `cscli machines add` and
`cscli bouncers add`; the same bans imported with `cscli decisions import -i bans.csv`
(CSV header duration,scope,value,reason). Then delta polls and start-up streams as above.
It has no /v1/policy. Its SQLite database runs without WAL, as Debian ships it, unless
--crowdsec-wal. No ingest runs beside it (it has none to run), which favours CrowdSec.

The table shows each figure for both, the ratio pullwarden / CrowdSec, the target (set for
pullwarden) and PASS or MISS for each. 1 MB = 10^6 bytes. The benchmark never fails on a
MISS. Everything it starts (both servers, wrk, curl, the log feeder) is stopped at the end,
on error or Ctrl-C too. The machine is shared by the servers, wrk and curl (2 cores here):
the figures are for everything on one box, as an operator on a small VM would run it.

The code measured is the code beside this script (its parent directory goes first on
PYTHONPATH), with the given config file only and no PULLWARDEN_* variables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENLOGS = HERE / "genlogs.py"
HOST = "127.0.0.1"
MB = 1_000_000

TARGET_POLICY_RPS = 3_000
TARGET_POLICY_P99_MS = 10.0
TARGET_DELTA_RPS = 1_000
TARGET_STARTUP_SECONDS = 0.5
TARGET_RSS_BYTES = 300 * MB


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- processes --------------------------------------------------------------------------------

class Children:
    """Every process this script starts, so that all of them are stopped in the end."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], log: Path, **kw) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; only this process, by its pid."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                say(f"  pid {proc.pid} did not stop within {grace:.0f} s: SIGKILL")
                proc.kill()
                proc.wait(10)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                say(f"stopping {name} (pid {proc.pid})")
                self.stop(proc)


def proc_memory(pid: int) -> dict:
    """VmRSS and VmHWM (peak resident set) of a live process, in bytes."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return {"rss_bytes": out.get("VmRSS"), "hwm_bytes": out.get("VmHWM")}


class MemoryTimeline(threading.Thread):
    """The server's VmRSS every ``every`` seconds, each sample under the phase the script was in
    (mark()): where the peak is reached, not only how high it is."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(name="memory", daemon=True)
        self.pid, self.every = pid, every
        self.phase, self.halt = "start", threading.Event()
        self.samples: list[tuple[str, str, int]] = []      # (time, phase, bytes)

    def mark(self, phase: str) -> None:
        self.phase = phase

    def run(self) -> None:
        while not self.halt.is_set():
            rss = proc_memory(self.pid)["rss_bytes"]
            if rss:
                self.samples.append((utcnow().isoformat(), self.phase, rss))
            self.halt.wait(self.every)

    def stop(self) -> dict:
        """Per phase its highest sample, and the peak's phase and time."""
        self.halt.set()
        self.join(5)
        phases: dict[str, int] = {}
        for _, phase, rss in self.samples:
            phases[phase] = max(phases.get(phase, 0), rss)
        peak = max(self.samples, key=lambda s: s[2], default=None)
        return {"phases": phases, "peak": peak and {"at": peak[0], "phase": peak[1], "rss_bytes": peak[2]},
                "samples": len(self.samples)}


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_json(url: str, timeout: float = 5.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float):
    """Poll check() until it returns something true; fail if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise BenchError(f"{what}: the process exited with {proc.returncode}; its log ends with:\n"
                             + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: nothing after {timeout:.0f} s; see {log}")
        time.sleep(0.2)


class BenchError(Exception):
    pass


def run(cmd: list[str], log: Path, **kw) -> str:
    """Run a setup command to completion; its output is appended to `log` and returned."""
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}\n")
    if res.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:4])} ... exited with {res.returncode}:\n{(res.stdout + res.stderr)[-3000:]}")
    return res.stdout


# -- inputs -----------------------------------------------------------------------------------

def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return n


def log_end(now: datetime) -> datetime:
    """Where the generated log ends: the start of the current hour, so that serve, on the wall
    clock, judges it as an operator's serve judges the last two days of its own log (a log that
    ends in the past gives passes nothing to judge: the detection windows end at the clock),
    and one log serves every run within the hour."""
    return now.replace(minute=0, second=0, microsecond=0)


def ensure_log(workdir: Path, lines: int, end: datetime) -> Path:
    """The generated nginx `main` log of this many lines over the two days before ``end``;
    generated once, then reused while it is the current one (its older ones are removed)."""
    path = workdir / f"mirror-main-{lines}-{end:%Y%m%dT%H}.log"
    if path.is_file() and count_lines(path) == lines:
        say(f"reusing {path} ({lines:,} lines)")
        return path
    for old in workdir.glob(f"mirror-main-{lines}-*.log"):     # this bench's own, of an earlier hour
        old.unlink()
    say(f"generating {path} ({lines:,} lines, the two days up to {end:%Y-%m-%d %H:%M} UTC) with bench/genlogs.py ...")
    tmp = path.with_suffix(".log.partial")
    start = end - timedelta(days=2)
    with open(tmp, "wb") as out:
        subprocess.run([sys.executable, str(GENLOGS), "--lines", str(lines), "--format", "main",
                        "--start", start.isoformat() + "+00:00"], stdout=out, check=True)
    tmp.replace(path)
    return path


def ban_values(n: int):
    """10.0.0.0, 10.0.0.1, ... the same addresses for both servers."""
    for i in range(n):
        yield f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"


# the time field of an nginx `main` line: `ip - user [07/Dec/2026:08:00:00 +0800] "...`
STAMP = re.compile(rb"^([^ \n]+ - [^ \n]+ )\[[^\]\n]*\]", re.M)


class Feeder(threading.Thread):
    """Appends whole lines of the generated log to the tailed file at a steady rate, each block
    stamped with the wall clock (UTC), as a live mirror writes them: the fresh passes judge
    traffic of the current hour, not lines from two days ago."""

    TICK = 0.1

    def __init__(self, pool: Path, target: Path, rate: int):
        super().__init__(name="feeder", daemon=True)
        self.pool, self.target, self.rate = pool, target, rate
        self.halt = threading.Event()
        self.lines = 0
        self.behind = 0.0       # seconds the feeder fell behind its schedule, at most

    def run(self) -> None:
        per_tick = max(1, round(self.rate * self.TICK))
        with open(self.pool, "rb") as src, open(self.target, "ab") as dst:
            due = time.monotonic()
            while not self.halt.is_set():
                block = []
                for _ in range(per_tick):
                    line = src.readline()
                    if not line:
                        src.seek(0)
                        line = src.readline()
                    block.append(line if line.endswith(b"\n") else line + b"\n")
                stamp = b"\\1[" + utcnow().strftime("%d/%b/%Y:%H:%M:%S +0000").encode() + b"]"
                dst.write(STAMP.sub(stamp, b"".join(block)))
                dst.flush()
                self.lines += per_tick
                due += self.TICK
                self.behind = max(self.behind, time.monotonic() - due)
                self.halt.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


# -- load -------------------------------------------------------------------------------------

# What each dashboard page asks of the API (dashboard/views/*): a session requests one page's
# paths in a row, as a page load does, then "thinks" and moves on to the next page.
DASHBOARD_PAGES = {
    "overview": ["/v1/stats/overview", "/v1/stats/budget"],
    "traffic": ["/v1/stats/traffic", "/v1/stats/traffic?bucket=day&registry=docker.io"],
    "top talkers": ["/v1/stats/top?by=address", "/v1/stats/top?by=prefix", "/v1/stats/top?by=asn"],
    "entity": ["/v1/stats/entity?kind=address&value=203.0.1.1", "/v1/stats/decisions?value=203.0.1.1"],
    "review": ["/v1/stats/findings?limit=200", "/v1/stats/decisions?held=true"],
    "decisions": ["/v1/stats/decisions?limit=500"],
    "rules": ["/v1/stats/rules"],
    "images": ["/v1/stats/images", "/v1/stats/demand"],
}


class DashboardSessions:
    """N dashboard users clicking through the pages, one thread each; page load times kept."""

    def __init__(self, base: str, key: str, sessions: int, think: float):
        self.base, self.key, self.think = base, key, think
        self.stop_flag = threading.Event()
        self.loads: list[tuple[str, float]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(sessions)]

    def start(self) -> None:
        import urllib.request
        # the entity page opens the top talker, as a user selecting the first row would
        req = urllib.request.Request(self.base + "/v1/stats/top?by=address&limit=1", headers={"X-Api-Key": self.key})
        with urllib.request.urlopen(req, timeout=60) as resp:
            rows = json.loads(resp.read())["rows"]
        top = rows[0]["entity"] if rows else "203.0.113.1"
        self.pages = {k: [p.replace("203.0.1.1", top) for p in v] for k, v in DASHBOARD_PAGES.items()}
        for t in self.threads:
            t.start()

    def run(self, n: int) -> None:
        import urllib.request
        pages = list(self.pages.items())
        i = n                       # sessions start on different pages
        while not self.stop_flag.is_set():
            name, paths = pages[i % len(pages)]
            started = time.perf_counter()
            try:
                for path in paths:
                    req = urllib.request.Request(self.base + path, headers={"X-Api-Key": self.key})
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        resp.read()
                self.loads.append((name, time.perf_counter() - started))
            except Exception as e:          # a figure, never a crash of the benchmark
                self.errors.append(f"{name}: {e}")
            i += 1
            self.stop_flag.wait(self.think)

    def stop(self) -> dict:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=120)
        by_page: dict[str, list[float]] = {}
        for name, seconds in self.loads:
            by_page.setdefault(name, []).append(seconds)
        return {"sessions": len(self.threads), "think_seconds": self.think, "page_loads": len(self.loads),
                "errors": self.errors[:10], "error_count": len(self.errors),
                "pages": {k: {"loads": len(v), "median_s": statistics.median(v), "max_s": max(v)}
                          for k, v in sorted(by_page.items())}}


WRK_LUA = r"""-- written by bench/bench_enforcer.py for one wrk run
wrk.headers["X-Api-Key"] = [==[%(key)s]==]
local etag = [==[%(etag)s]==]
if etag ~= "" then
  wrk.headers["If-None-Match"] = etag
  -- a poller that takes each new version once, as any HTTP client that revalidates does:
  -- detection publishes during the run, and a stale ETag would make every poll a full body
  wrk.headers["Accept-Encoding"] = "gzip"
end

local threads = {}
local req
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {}; maxbody = 0; req = wrk.format() end
function request() return req end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if body and #body > maxbody then maxbody = #body end
  local tag = headers["ETag"] or headers["etag"]
  if etag ~= "" and status == 200 and tag then
    wrk.headers["If-None-Match"] = tag
    req = wrk.format()
  end
end
function done(summary, latency, requests)
  local merged, mb = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do merged[k] = (merged[k] or 0) + v end
    local m = t:get("maxbody")
    if m > mb then mb = m end
  end
  local st = {}
  for k, v in pairs(merged) do st[#st + 1] = string.format('"%%d":%%d', k, v) end
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},' ..
    '"latency_us":{"mean":%%.1f,"p50":%%d,"p90":%%d,"p99":%%d,"p999":%%d,"max":%%d},' ..
    '"statuses":{%%s},"max_body":%%d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, table.concat(st, ","), mb))
end
"""


def wrk_run(name: str, url: str, key: str, etag: str, args, workdir: Path, children: Children,
            server_pid: int, duration: int | None = None, connections: int | None = None,
            delay_ms: int = 0) -> dict:
    """One wrk run; ``delay_ms``: each connection waits that long between its requests (a paced
    fleet of pollers rather than as many requests as the server can answer)."""
    script = workdir / f"wrk-{name}.lua"
    script.write_text(WRK_LUA % {"key": key, "etag": etag}
                      + (f"function delay() return {delay_ms} end\n" if delay_ms else ""))
    out = workdir / f"wrk-{name}.out"
    duration = duration or args.duration
    cmd = ["wrk", f"-t{args.threads}", f"-c{connections or args.connections}", f"-d{duration}s", "--latency",
           "--timeout", "10s", "-s", str(script), url]
    cpu0, t0, wall0 = proc_cpu_seconds(server_pid), utcnow(), time.perf_counter()
    proc = children.start(f"wrk {name}", cmd, out)
    try:
        proc.wait(duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk {name} did not end; see {out}") from None
    wall, cpu1, t1 = time.perf_counter() - wall0, proc_cpu_seconds(server_pid), utcnow()
    text = out.read_text(errors="replace")
    if proc.returncode != 0 or "WRKJSON " not in text:
        raise BenchError(f"wrk {name} exited with {proc.returncode}:\n{text[-3000:]}")
    r = json.loads(text.split("WRKJSON ", 1)[1].splitlines()[0])
    seconds = r["duration_us"] / 1e6
    r.update(name=name, url=url, seconds=seconds, requests_per_second=r["requests"] / seconds,
             p99_ms=r["latency_us"]["p99"] / 1000, window=[t0.isoformat(), t1.isoformat()],
             server_cpu_share=(cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None)
    return r


def curl_get(url: str, key: str, body: Path, headers: Path | None = None) -> dict:
    """One GET with curl, the whole body to a file: wall time, time to first byte, bytes, status."""
    cmd = ["curl", "-s", "--max-time", "300", "-H", f"X-Api-Key: {key}", "-o", str(body),
           "-w", "%{http_code} %{time_total} %{time_starttransfer} %{size_download}"]
    if headers:
        cmd += ["-D", str(headers)]
    res = subprocess.run(cmd + [url], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise BenchError(f"curl {url} failed ({res.returncode}): {res.stderr.strip()}")
    code, total, ttfb, size = res.stdout.split()
    return {"status": int(code), "seconds": float(total), "first_byte_seconds": float(ttfb), "bytes": int(size)}


def startup_runs(url: str, key: str, runs: int, workdir: Path, prefix: str, pid: int) -> dict:
    """--startup-runs full start-up pulls; checks every body: all decisions there, each once."""
    out, hwm_before = [], proc_memory(pid)
    cpu0, wall0 = proc_cpu_seconds(pid), time.perf_counter()
    for i in range(1, runs + 1):
        body = workdir / f"{prefix}-startup-{i}.json"
        r = curl_get(url, key, body)
        if r["status"] != 200:
            raise BenchError(f"{url} answered {r['status']}: {body.read_text(errors='replace')[:500]}")
        data = json.loads(body.read_bytes())
        new = data.get("new") or []
        r.update(decisions=len(new), distinct_values=len({d["value"] for d in new}),
                 deleted=len(data.get("deleted") or []))
        body.unlink()               # 14 MB each: keep the work dir small
        say(f"  start-up {i}/{runs}: {r['seconds']:.3f} s (first byte {r['first_byte_seconds']:.3f} s), "
            f"{r['bytes'] / MB:.1f} MB, {r['decisions']:,} decisions")
        out.append(r)
    secs = [r["seconds"] for r in out]
    cpu1, wall = proc_cpu_seconds(pid), time.perf_counter() - wall0
    return {"runs": out, "server_cpu_share": (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None, "seconds_median": statistics.median(secs), "seconds_best": min(secs),
            "first_byte_seconds_median": statistics.median(r["first_byte_seconds"] for r in out),
            "bytes": out[-1]["bytes"], "decisions": out[-1]["decisions"],
            "distinct_values": out[-1]["distinct_values"], "memory_before": hwm_before,
            "memory_after": proc_memory(pid)}


# -- pullwarden -------------------------------------------------------------------------------

def pullwarden_cmd() -> list[str]:
    script = Path(sys.executable).parent / "pullwarden"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    return env


def insert_bans(db: Path, n: int) -> float:
    """The bans, straight into the decisions table, as the tests do (100,000 in one statement)."""
    import duckdb
    now = utcnow()
    con = duckdb.connect(str(db))
    try:
        started = time.perf_counter()
        con.execute("""
            insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
            select nextval('decision_seq'), 'ip', '10.' || (i // 65536) || '.' || (i // 256 % 256) || '.' || (i % 256),
                   'ban', 'bench', 'import', 'bench import', ?, ? from range(?) t(i)""",
                    [now, now + timedelta(hours=24), n])
        seconds = time.perf_counter() - started
        count = con.execute("select count(*) from decisions where until > ?", [now]).fetchone()[0]
    finally:
        con.close()
    if count != n:
        raise BenchError(f"{count:,} active decisions in {db}, not {n:,}")
    return seconds


def catchup_polls(args, base: str, key: str, d: Path, children: Children, proc, done, release) -> dict:
    """While the first ingest catches up: a paced fleet polls /v1/policy (304) and the CrowdSec
    stream (deltas) at once, in rounds of 2 s until the ingest has ended. Each figure is the
    worst round's (p99) or the sum (requests). ``release()`` puts the backlog in place, once the
    fleet's ETag and cursor are taken (a full policy and start-up stream of 1 M bans take seconds)."""
    body, heads = d / "policy-catchup.json", d / "policy-catchup.headers"
    curl_get(base + "/v1/policy", key, body, heads)
    etag = next((ln.split(":", 1)[1].strip() for ln in heads.read_text().splitlines()
                 if ln.lower().startswith("etag:")), "")
    body.unlink()
    curl_get(base + "/v1/decisions/stream?startup=true", key, body)     # the key's cursor
    body.unlink()
    rounds: dict[str, list[dict]] = {"policy_304": [], "delta": []}
    release()
    while not done():
        runs = {}
        threads = [threading.Thread(target=lambda n=n, url=url, tag=tag: runs.__setitem__(n, wrk_run(
                       f"pw-catchup-{n}", base + url, key, tag, args, d, children, proc.pid, duration=2,
                       connections=args.catchup_connections, delay_ms=args.catchup_delay_ms)))
                   for n, url, tag in (("policy_304", "/v1/policy", etag),
                                       ("delta", "/v1/decisions/stream?startup=false", ""))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n, r in runs.items():
            rounds[n].append(r)
    out = {"connections": args.catchup_connections, "delay_ms": args.catchup_delay_ms}
    for n, rs in rounds.items():
        if rs:
            secs = sum(r["seconds"] for r in rs)
            statuses: dict[str, int] = {}
            for r in rs:
                for k, v in r["statuses"].items():
                    statuses[k] = statuses.get(k, 0) + v
            out[n] = {"rounds": len(rs), "requests": sum(r["requests"] for r in rs),
                      "requests_per_second": sum(r["requests"] for r in rs) / secs,
                      "p99_ms_worst": max(r["p99_ms"] for r in rs),
                      "p99_ms_median": statistics.median(r["p99_ms"] for r in rs), "statuses": statuses}
    say(f"  polls during the catch-up: " + "; ".join(
        f"{n} {v['requests_per_second']:,.0f}/s p99 worst {v['p99_ms_worst']:.2f} ms (median of {v['rounds']} "
        f"rounds {v['p99_ms_median']:.2f})" for n, v in out.items() if isinstance(v, dict)))
    return out


def job_overlap(db: Path, windows: dict[str, list[str]]) -> dict:
    """After the server stopped: for each measured window, the share of it during which an
    ingest run (table ingest_runs) or a detection pass (table detect_runs) was under way,
    and the lines those ingest runs read."""
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        ingest = con.execute("select started_at, seconds, lines from ingest_runs").fetchall()
        detect = [(ran_at - timedelta(seconds=seconds), seconds, 0) for ran_at, seconds in
                  con.execute("select ran_at, seconds from detect_runs").fetchall()]
    finally:
        con.close()
    out = {"ingest_runs": len(ingest), "detect_runs": len(detect)}
    for name, (a, b) in windows.items():
        t0, t1 = datetime.fromisoformat(a), datetime.fromisoformat(b)
        span = (t1 - t0).total_seconds()
        out[name] = {}
        for job, rows in (("ingest", ingest), ("detect", detect)):
            busy, lines, runs = 0.0, 0, 0
            for started, seconds, n in rows:
                overlap = (min(started + timedelta(seconds=seconds), t1) - max(started, t0)).total_seconds()
                if overlap > 0:
                    busy, lines, runs = busy + overlap, lines + n, runs + 1
            out[name][job] = {"busy_share": busy / span if span > 0 else 0.0, "runs": runs, "lines": lines}
    return out


def detection_passes(db: Path, since: str, samples: list[tuple[str, str, int]]) -> dict:
    """After the server stopped: the detection passes that ended after ``since`` (the backlog's
    release; table detect_runs), by kind: how many, their seconds, findings, decisions made,
    how many passes held bans for an admin (the circuit breaker); and the server's highest RSS
    sampled while one was under way."""
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("""select kind, ran_at, seconds, findings, decisions, held from detect_runs
                              where ran_at > ? order by ran_at""", [datetime.fromisoformat(since)]).fetchall()
    finally:
        con.close()
    out: dict = {}
    for kind, ran_at, seconds, findings, decisions, held in rows:
        k = out.setdefault(kind, {"passes": 0, "seconds": 0.0, "longest_seconds": 0.0, "findings": 0,
                                  "decisions": 0, "held": 0, "rss_peak_bytes": 0})
        k["passes"] += 1
        k["seconds"] += seconds
        k["longest_seconds"] = max(k["longest_seconds"], seconds)
        k["findings"] += findings
        k["decisions"] += decisions
        k["held"] += 1 if held else 0
        began = (ran_at - timedelta(seconds=seconds)).isoformat()
        during = [rss for t, _, rss in samples if began <= t <= ran_at.isoformat()]
        k["rss_peak_bytes"] = max([k["rss_peak_bytes"], *during])
    return out


def serve_log_lines(log: Path) -> list[dict]:
    """What the server wrote besides its banner, repeated lines counted once (times blanked)."""
    import re
    counts: dict[str, int] = {}
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("pullwarden serving on"):
            continue
        key = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( UTC)?", "<time>", line.strip())
        counts[key] = counts.get(key, 0) + 1
    return [{"line": k, "count": n} for k, n in counts.items()]


def bench_pullwarden(args, workdir: Path, log: Path, children: Children) -> dict:
    d = workdir / "pullwarden"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    db, setup_log, serve_log = d / "bench.duckdb", d / "setup.log", d / "serve.log"
    env = child_env()

    say("pullwarden: fresh database, proxy key, bans ...")
    empty = d / "empty.toml"
    empty.write_text("# built-in defaults only\n")
    key = json.loads(run(pullwarden_cmd() + ["keys", "create", "--role", "proxy", "--name", "bench",
                                             "--config", str(empty), "--db", str(db), "--json"],
                         setup_log, env=env, cwd=d).strip().splitlines()[-1])["key"]
    viewer = json.loads(run(pullwarden_cmd() + ["keys", "create", "--role", "viewer", "--name", "dashboard",
                                                "--config", str(empty), "--db", str(db), "--json"],
                            setup_log, env=env, cwd=d).strip().splitlines()[-1])["key"]
    insert_seconds = insert_bans(db, args.decisions)
    say(f"  {args.decisions:,} bans inserted in {insert_seconds:.2f} s (one SQL statement)")

    # The backlog appears only once the server answers (renamed into place): serve starts its
    # jobs before its API, and a catch-up timed from /healthz missed the part done before it
    source, staged = d / "tailed.log", d / "staged.log"
    say(f"  copying the log to {staged}, renamed to {source} once the server answers ...")
    shutil.copyfile(log, staged)
    source.write_bytes(b"")
    port = free_port()
    cfg = d / "serve.toml"
    cfg.write_text(f'db = {json.dumps(str(db))}\nsources = [{json.dumps(str(source))}]\n'
                   f'host = "{HOST}"\nport = {port}\ningest_interval = 1\ndetect_interval = {args.detect_interval:g}\n')
    base = f"http://{HOST}:{port}"

    say(f"pullwarden: starting `pullwarden serve --config {cfg}` on {base} ...")
    started = time.perf_counter()
    proc = children.start("pullwarden serve", pullwarden_cmd() + ["serve", "--config", str(cfg)], serve_log,
                          env=env, cwd=d)
    result: dict = {"pid": proc.pid, "port": port, "insert_seconds": insert_seconds, "config": cfg.read_text()}
    feeder = None
    timeline = MemoryTimeline(proc.pid)
    timeline.start()
    try:
        wait_for("pullwarden serve /healthz", lambda: http_json(base + "/healthz"), proc, serve_log, 120)
        result["ready_seconds"] = time.perf_counter() - started
        result["memory_ready"] = proc_memory(proc.pid)
        say(f"  /healthz answers after {result['ready_seconds']:.1f} s; waiting for the first ingest "
            f"({args.lines:,} lines) ...")
        timeline.mark("first ingest")

        released = {}

        def release():
            """The backlog in place: the next ingest run (ingest_interval = 1) catches up on it."""
            released.update(at=utcnow(), cpu=proc_cpu_seconds(proc.pid), wall=time.perf_counter())
            os.replace(staged, source)

        def first_ingest():
            """The server's clock when an ingest run that began after the release ended (one
            that began before it read an empty file in milliseconds)."""
            h = http_json(base + "/healthz") or {}
            job = (h.get("jobs") or {}).get("ingest") or {}
            if job.get("error"):
                raise BenchError(f"the server's ingest job failed: {job['error']}; see {serve_log}")
            ok = datetime.fromisoformat(job["last_ok"]).replace(tzinfo=None) if job.get("last_ok") else None
            return ok if ok and ok > released["at"] + timedelta(seconds=0.5) else None
        if args.catchup_polls:
            result["catchup_polls"] = catchup_polls(args, base, key, d, children, proc, first_ingest, release)
        else:
            release()
        done_at = wait_for("first ingest", first_ingest, proc, serve_log, 1800)
        result["first_ingest_window"] = [released["at"].isoformat(), done_at.isoformat()]
        # until the run that read it began: ingest_runs, after the server stopped (catchup_span)
        result["first_ingest_seconds"] = (done_at - released["at"]).total_seconds()
        result["first_ingest_cpu_seconds"] = proc_cpu_seconds(proc.pid) - released["cpu"]    # polls' share included
        result["first_ingest_lines_per_second"] = args.lines / result["first_ingest_seconds"]
        result["memory_after_first_ingest"] = proc_memory(proc.pid)
        say(f"  first ingest done {result['first_ingest_seconds']:.1f} s later; "
            f"RSS {result['memory_after_first_ingest']['rss_bytes'] / MB:.0f} MB, "
            f"peak {result['memory_after_first_ingest']['hwm_bytes'] / MB:.0f} MB")

        timeline.mark("after the first ingest")
        if args.feed_rate > 0:
            feeder = Feeder(log, source, args.feed_rate)
            feeder.start()
            say(f"  appending {args.feed_rate:,} lines/s to the tailed log during the load")
            time.sleep(2)         # let the tail-ingest runs settle into their rhythm

        # the current ETag, from one full GET (also timed: what a proxy's first poll costs)
        body, heads = d / "policy.json", d / "policy.headers"
        timeline.mark("full policy GET")
        full = curl_get(base + "/v1/policy", key, body, heads)
        etag = next((ln.split(":", 1)[1].strip() for ln in heads.read_text().splitlines()
                     if ln.lower().startswith("etag:")), "")
        if full["status"] != 200 or not etag:
            raise BenchError(f"GET /v1/policy answered {full['status']} without an ETag")
        full["bans"] = len(json.loads(body.read_bytes())["bans"])
        body.unlink()
        result["policy_full"] = full
        say(f"  GET /v1/policy (full): {full['seconds']:.3f} s, {full['bytes'] / MB:.1f} MB, "
            f"{full['bans']:,} bans, ETag {etag}")

        say(f"pullwarden: wrk, /v1/policy with If-None-Match {etag}, {args.duration} s ...")
        timeline.mark("policy 304")
        result["policy_304"] = wrk_run("pw-policy", base + "/v1/policy", key, etag, args, d, children, proc.pid)
        say(f"  {result['policy_304']['requests_per_second']:,.0f} requests/s, "
            f"p99 {result['policy_304']['p99_ms']:.2f} ms")

        if args.dashboard_sessions:
            say(f"pullwarden: wrk, /v1/policy 304 again, with {args.dashboard_sessions} dashboard sessions "
                f"clicking through the pages ...")
            sessions = DashboardSessions(base, viewer, args.dashboard_sessions, args.think)
            timeline.mark("policy 304 + dashboards")
            sessions.start()
            time.sleep(1)
            result["policy_304_dashboard"] = wrk_run("pw-policy-dash", base + "/v1/policy", key, etag, args, d,
                                                     children, proc.pid)
            result["dashboard"] = sessions.stop()
            say(f"  {result['policy_304_dashboard']['requests_per_second']:,.0f} requests/s, "
                f"p99 {result['policy_304_dashboard']['p99_ms']:.2f} ms; {result['dashboard']['page_loads']} page "
                f"loads, {result['dashboard']['error_count']} errors")

        timeline.mark("delta polls")
        first = curl_get(base + "/v1/decisions/stream?startup=true", key, d / "first.json")
        (d / "first.json").unlink()
        say(f"pullwarden: one start-up pull for the cursor ({first['seconds']:.2f} s); "
            f"wrk, delta polls, {args.duration} s ...")
        result["delta"] = wrk_run("pw-delta", base + "/v1/decisions/stream?startup=false", key, "", args, d,
                                  children, proc.pid)
        say(f"  {result['delta']['requests_per_second']:,.0f} requests/s, p99 {result['delta']['p99_ms']:.2f} ms")

        say(f"pullwarden: {args.startup_runs} start-up streams of {args.decisions:,} decisions ...")
        t0 = utcnow()
        timeline.mark("start-up streams")
        result["startup"] = startup_runs(base + "/v1/decisions/stream?startup=true", key, args.startup_runs,
                                         d, "pw", proc.pid)
        result["startup"]["window"] = [t0.isoformat(), utcnow().isoformat()]
        if feeder:
            feeder.stop()
            result["feeder"] = {"rate": args.feed_rate, "lines": feeder.lines, "behind_seconds": feeder.behind}
            feeder = None
        result["memory_end"] = proc_memory(proc.pid)
    finally:
        if feeder:
            feeder.stop()
        result["memory_timeline"] = timeline.stop()
        with open(d / "memory-timeline.tsv", "w") as f:      # for a closer look: time, phase, RSS bytes
            f.writelines(f"{t}\t{phase}\t{rss}\n" for t, phase, rss in timeline.samples)
        say("pullwarden: stopping the server ...")
        children.stop(proc)
    result["exit_code"] = proc.returncode
    result["log_lines"] = serve_log_lines(serve_log)
    windows = {k: result[k]["window"] for k in ("policy_304", "delta", "startup") if k in result}
    peak = result["memory_timeline"]["peak"]
    if peak:
        at = datetime.fromisoformat(peak["at"])     # a second either side: the job under way then
        windows["memory_peak"] = [(at - timedelta(seconds=1)).isoformat(), (at + timedelta(seconds=1)).isoformat()]
    try:
        result["jobs"] = job_overlap(db, windows)
    except Exception as e:          # a figure of context only: never lose the measurements for it
        result["jobs_error"] = f"{type(e).__name__}: {e}"
    if "first_ingest_window" in result:
        try:
            result["detection"] = detection_passes(db, result["first_ingest_window"][0], timeline.samples)
        except Exception as e:      # context, as job_overlap
            result["detection_error"] = f"{type(e).__name__}: {e}"
        try:
            began = catchup_began(db, *result["first_ingest_window"])
            if began is not None:
                result["first_ingest_seconds"] = (datetime.fromisoformat(result["first_ingest_window"][1])
                                                  - began).total_seconds()
                result["first_ingest_lines_per_second"] = args.lines / result["first_ingest_seconds"]
        except Exception as e:
            result["first_ingest_error"] = f"{type(e).__name__}: {e}"
    return result


def catchup_began(db: Path, released: str, done: str) -> datetime | None:
    """When the first ingest run that read the released backlog began (table ingest_runs): the
    catch-up's wall time is from there (the job waits up to ingest_interval for its next turn)."""
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("select min(started_at) from ingest_runs where started_at >= ? and started_at <= ? "
                           "and lines > 0", [datetime.fromisoformat(released), datetime.fromisoformat(done)]
                           ).fetchall()[0][0]
    finally:
        con.close()


# -- CrowdSec ---------------------------------------------------------------------------------

def crowdsec_config(d: Path, port: int, wal: bool) -> Path:
    """A scratch copy of Debian's /etc/crowdsec/config.yaml: paths in `d`, LAPI only."""
    import yaml
    stock = Path("/etc/crowdsec/config.yaml")
    if not stock.is_file():
        raise BenchError(f"{stock} not found: apt-get install -y crowdsec (its failing post-install is fine)")
    c = yaml.safe_load(stock.read_text())
    for sub in ("data", "hub", "notifications", "acquis.d"):
        (d / sub).mkdir(exist_ok=True)
    for name in ("profiles.yaml", "simulation.yaml"):
        src = Path("/etc/crowdsec") / name
        if src.is_file():
            shutil.copy(src, d / name)
        else:
            (d / name).write_text("simulation: off\n" if name == "simulation.yaml" else "")
    (d / "acquis.yaml").write_text("")
    c["common"].update(daemonize=False, log_media="file", log_dir=f"{d}/", working_dir=str(d))
    c["config_paths"].update(config_dir=f"{d}/", data_dir=f"{d}/data/", simulation_path=str(d / "simulation.yaml"),
                             hub_dir=f"{d}/hub/", index_path=str(d / "hub" / ".index.json"),
                             notification_dir=f"{d}/notifications/")
    c.setdefault("crowdsec_service", {}).update(acquisition_path=str(d / "acquis.yaml"),
                                                acquisition_dir=str(d / "acquis.d"))
    c["db_config"]["db_path"] = str(d / "data" / "crowdsec.db")
    if wal:
        c["db_config"]["use_wal"] = True
    c["api"]["client"]["credentials_path"] = str(d / "local_api_credentials.yaml")
    server = c["api"]["server"]
    server.pop("online_client", None)                   # no Central API: there is no network
    server.update(listen_uri=f"{HOST}:{port}", profiles_path=str(d / "profiles.yaml"),
                  console_path=str(d / "console.yaml"))
    c["prometheus"] = {"enabled": False}                # its fixed port 6060 might be taken
    path = d / "config.yaml"
    path.write_text(yaml.safe_dump(c, sort_keys=False))
    return path


def bench_crowdsec(args, workdir: Path, children: Children) -> dict:
    for tool in ("crowdsec", "cscli"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} not found: apt-get install -y crowdsec")
    d = workdir / "crowdsec"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    port = free_port()
    base = f"http://{HOST}:{port}"
    cfg = crowdsec_config(d, port, args.crowdsec_wal)
    setup_log, api_log = d / "setup.log", d / "crowdsec.out"
    version = subprocess.run(["crowdsec", "-version"], capture_output=True, text=True).stderr
    version = next((ln.split("version:", 1)[1].strip() for ln in version.splitlines() if "version:" in ln), "?")

    say(f"CrowdSec {version}: scratch config {cfg}, machine, LAPI on {base} ...")
    run(["cscli", "-c", str(cfg), "machines", "add", "bench-machine", "--auto",
         "-f", str(d / "local_api_credentials.yaml")], setup_log)
    started = time.perf_counter()
    proc = children.start("crowdsec LAPI", ["crowdsec", "-c", str(cfg), "-no-cs"], api_log, cwd=d)
    result: dict = {"pid": proc.pid, "port": port, "version": version, "wal": args.crowdsec_wal}
    try:
        wait_for("crowdsec /health", lambda: http_json(base + "/health"), proc, api_log, 60)
        result["ready_seconds"] = time.perf_counter() - started
        key = secrets.token_hex(24)
        run(["cscli", "-c", str(cfg), "bouncers", "add", "bench-bouncer", "-k", key], setup_log)
        csv = d / "bans.csv"
        with open(csv, "w") as f:
            f.write("duration,scope,value,reason\n")
            f.writelines(f"24h,ip,{v},bench\n" for v in ban_values(args.decisions))
        say(f"  cscli decisions import of {args.decisions:,} bans ...")
        t = time.perf_counter()
        run(["cscli", "-c", str(cfg), "decisions", "import", "-i", str(csv)], setup_log, timeout=1800)
        result["import_seconds"] = time.perf_counter() - t
        result["memory_after_import"] = proc_memory(proc.pid)
        say(f"  imported in {result['import_seconds']:.1f} s")

        first = curl_get(base + "/v1/decisions/stream?startup=true", key, d / "first.json")
        (d / "first.json").unlink()
        say(f"CrowdSec: one start-up pull for the cursor ({first['seconds']:.2f} s); "
            f"wrk, delta polls, {args.duration} s ...")
        result["delta"] = wrk_run("cs-delta", base + "/v1/decisions/stream?startup=false", key, "", args, d,
                                  children, proc.pid)
        say(f"  {result['delta']['requests_per_second']:,.0f} requests/s, p99 {result['delta']['p99_ms']:.2f} ms")

        say(f"CrowdSec: {args.startup_runs} start-up streams of {args.decisions:,} decisions ...")
        result["startup"] = startup_runs(base + "/v1/decisions/stream?startup=true", key, args.startup_runs,
                                         d, "cs", proc.pid)
        result["memory_end"] = proc_memory(proc.pid)
    finally:
        say("CrowdSec: stopping the LAPI ...")
        children.stop(proc)
    result["exit_code"] = proc.returncode
    return result


# -- report -----------------------------------------------------------------------------------

def tool_version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0] if text else "?"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!bench"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev + ("+dirty" if dirty else "")) if rev else "?"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def rows_of(pw: dict, cs: dict | None) -> list[dict]:
    """One row per figure: both values, the ratio, the target and both verdicts."""
    rows = []

    def add(figure, pv, cv, fmt, target=None, ok=None, better="higher"):
        row = {"figure": figure, "pullwarden": pv, "crowdsec": cv, "format": fmt, "target": target,
               "better": better}
        if pv is not None and cv:
            row["ratio"] = pv / cv
        if ok is not None:
            row["pullwarden_pass"] = ok(pv) if pv is not None else None
            row["crowdsec_pass"] = ok(cv) if cv is not None else None
        rows.append(row)

    c = cs or {}
    if pw.get("first_ingest_seconds"):
        add("first ingest (catch-up): lines/s", pw["first_ingest_lines_per_second"], None, "{:,.0f}")
    for name, label in (("policy_304", "policy 304"), ("delta", "delta polls")):
        p = (pw.get("catchup_polls") or {}).get(name)
        if p:
            add(f"{label} during catch-up: req/s", p["requests_per_second"], None, "{:,.0f}")
            add(f"{label} during catch-up: p99 ms", p["p99_ms_worst"], None, "{:.2f}",
                f"< {TARGET_POLICY_P99_MS:g}", lambda v: v < TARGET_POLICY_P99_MS, "lower")
    p = pw.get("policy_304")
    if p:
        add("policy 304: requests/s", p["requests_per_second"], None, "{:,.0f}",
            f">= {TARGET_POLICY_RPS:,}", lambda v: v >= TARGET_POLICY_RPS)
        add("policy 304: latency p99 ms", p["p99_ms"], None, "{:.2f}", f"< {TARGET_POLICY_P99_MS:g}",
            lambda v: v < TARGET_POLICY_P99_MS, "lower")
    p = pw.get("policy_304_dashboard")
    if p:
        n = pw["dashboard"]["sessions"]
        add(f"policy 304 + {n} dashboards: req/s", p["requests_per_second"], None, "{:,.0f}",
            f">= {TARGET_POLICY_RPS:,}", lambda v: v >= TARGET_POLICY_RPS)
        add(f"policy 304 + {n} dashboards: p99 ms", p["p99_ms"], None, "{:.2f}", f"< {TARGET_POLICY_P99_MS:g}",
            lambda v: v < TARGET_POLICY_P99_MS, "lower")
        worst = max((v["max_s"] for v in pw["dashboard"]["pages"].values()), default=None)
        add("dashboard page load, worst s", worst, None, "{:.2f}", better="lower")
    pd, cd = pw.get("delta"), c.get("delta")
    if pd or cd:
        add("delta polls: requests/s", pd and pd["requests_per_second"], cd and cd["requests_per_second"],
            "{:,.0f}", f">= {TARGET_DELTA_RPS:,}", lambda v: v >= TARGET_DELTA_RPS)
        add("delta polls: latency p99 ms", pd and pd["p99_ms"], cd and cd["p99_ms"], "{:.2f}", better="lower")
    ps, cst = pw.get("startup"), c.get("startup")
    if ps or cst:
        add("start-up stream: seconds (median)", ps and ps["seconds_median"], cst and cst["seconds_median"],
            "{:.3f}", f"<= {TARGET_STARTUP_SECONDS:g}", lambda v: v <= TARGET_STARTUP_SECONDS, "lower")
        add("start-up stream: seconds (best)", ps and ps["seconds_best"], cst and cst["seconds_best"],
            "{:.3f}", better="lower")
        add("start-up stream: first byte s", ps and ps["first_byte_seconds_median"],
            cst and cst["first_byte_seconds_median"], "{:.3f}", better="lower")
        add("start-up stream: body MB", ps and ps["bytes"] / MB, cst and cst["bytes"] / MB, "{:.1f}",
            better="lower")
        add("start-up stream: decisions", ps and ps["decisions"], cst and cst["decisions"], "{:,}", better="-")
        add("server peak RSS (VmHWM) before MB", ps and ps["memory_before"]["hwm_bytes"] / MB,
            cst and cst["memory_before"]["hwm_bytes"] / MB, "{:,.0f}", better="lower")
        add("server peak RSS (VmHWM) after MB", ps and ps["memory_after"]["hwm_bytes"] / MB,
            cst and cst["memory_after"]["hwm_bytes"] / MB, "{:,.0f}", f"< {TARGET_RSS_BYTES / MB:,.0f}",
            lambda v: v < TARGET_RSS_BYTES / MB, "lower")
        add("server RSS (VmRSS) after MB", ps and ps["memory_after"]["rss_bytes"] / MB,
            cst and cst["memory_after"]["rss_bytes"] / MB, "{:,.0f}", better="lower")
    return rows


def print_table(result: dict) -> None:
    ctx, pw, cs = result["context"], result["pullwarden"], result.get("crowdsec")
    print(f"pullwarden enforcer benchmark: {ctx['decisions']:,} active bans, loopback, wrk -t{ctx['threads']} "
          f"-c{ctx['connections']} -d{ctx['duration']}s, {ctx['startup_runs']} start-up pulls each")
    print(f"  pullwarden {ctx['pullwarden_revision']}, python {ctx['python']}, duckdb {ctx['duckdb']}, "
          f"uvicorn {ctx['uvicorn']}; {ctx['crowdsec']}; {ctx['wrk']}")
    print(f"  {ctx['cpus']} CPUs shared by the server, wrk and curl; load before {ctx['load_before']} "
          f"after {ctx['load_after']}")
    jobs = pw.get("jobs", {})
    feed = pw.get("feeder")
    print(f"  pullwarden: tails a {ctx['lines']:,}-line log (first ingest {pw.get('first_ingest_seconds', 0):.1f} s, "
          f"{pw.get('first_ingest_cpu_seconds') or 0:.1f} CPU s of the server), "
          + (f"{feed['rate']:,} lines/s appended during the load ({feed['lines']:,} in all)" if feed
             else "nothing appended during the load"))
    if cs and "import_seconds" in cs:
        print(f"  CrowdSec: LAPI only (-no-cs), SQLite {'with' if cs['wal'] else 'without'} WAL; "
              f"cscli decisions import took {cs['import_seconds']:.1f} s "
              f"(pullwarden: one SQL insert, {pw.get('insert_seconds', 0):.2f} s)")
    print()
    w = (36, 12, 12, 9, 10, 13)
    print(f"{'figure':<{w[0]}}{'pullwarden':>{w[1]}}{'CrowdSec':>{w[2]}}{'ratio':>{w[3]}}{'target':>{w[4]}}"
          f"{'verdict':>{w[5]}}")
    print(f"{'':<{w[0]}}{'':>{w[1]}}{'':>{w[2]}}{'pw / CS':>{w[3]}}{'':>{w[4]}}{'pw / CS':>{w[5]}}")
    for r in result["rows"]:
        def fmt(v):
            return "-" if v is None else r["format"].format(v)
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        verdict = ""
        if "pullwarden_pass" in r:
            def word(x):
                return "-" if x is None else ("PASS" if x else "MISS")
            verdict = f"{word(r['pullwarden_pass'])} / {word(r['crowdsec_pass'])}"
        print(f"{r['figure']:<{w[0]}}{fmt(r['pullwarden']):>{w[1]}}{fmt(r['crowdsec']):>{w[2]}}{ratio:>{w[3]}}"
              f"{r['target'] or '':>{w[4]}}{verdict:>{w[5]}}")
    print("ratio: pullwarden's figure divided by CrowdSec's (requests/s: higher is better; seconds, ms, MB: lower);")
    print("targets are pullwarden's; CrowdSec's verdict shows whether it would meet them. 1 MB = 10^6 bytes.")
    print()
    for name, label in (("policy_304", "policy 304"), ("delta", "delta polls"), ("startup", "start-up streams")):
        if name in jobs:
            i, dt = jobs[name]["ingest"], jobs[name]["detect"]
            line = (f"  during pullwarden's {label}: ingest running {i['busy_share'] * 100:.0f}% of the time "
                    f"({i['runs']} runs, {i['lines']:,} lines), detection {dt['busy_share'] * 100:.0f}%")
            if pw.get(name, {}).get("server_cpu_share") is not None:
                line += f"; the server process used {pw[name]['server_cpu_share'] * 100:.0f}% of one core"
            print(line)
    for kind, k in (pw.get("detection") or {}).items():
        print(f"  pullwarden's {kind} detection passes after the backlog appeared: {k['passes']}, "
              f"{k['seconds']:.1f} s in all (longest {k['longest_seconds']:.1f} s), {k['findings']:,} findings, "
              f"{k['decisions']:,} decisions made, {k['held']} holding bans for an admin; highest RSS sampled "
              + (f"during one {k['rss_peak_bytes'] / MB:,.0f} MB" if k["rss_peak_bytes"] else "during one: none"))
    if "detection" in pw and not pw["detection"]:
        print("  pullwarden: no detection pass judged anything after the backlog appeared")
    for who, d in (("pullwarden", pw), ("CrowdSec", cs or {})):
        for name, label in (("memory_ready", "when it first answered"),
                            ("memory_after_first_ingest", "after the first ingest"),
                            ("memory_after_import", "after the import")):
            if d.get(name):
                m = d[name]
                print(f"  {who} memory {label}: RSS {m['rss_bytes'] / MB:,.0f} MB, peak {m['hwm_bytes'] / MB:,.0f} MB")
    mt = pw.get("memory_timeline")
    if mt and mt["peak"]:
        near = jobs.get("memory_peak", {})
        print("  pullwarden memory by phase, highest RSS sampled (every 0.2 s): "
              + ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in mt["phases"].items()))
        print(f"  pullwarden's highest RSS sampled: {mt['peak']['rss_bytes'] / MB:,.0f} MB during {mt['peak']['phase']}"
              + (f" (within 1 s of it: ingest running {near['ingest']['busy_share'] * 100:.0f}%, detection "
                 f"{near['detect']['busy_share'] * 100:.0f}%)" if near else ""))
    for who, d in (("pullwarden", pw), ("CrowdSec", cs or {})):
        for name in ("policy_304", "delta"):
            if name in d:
                r = d[name]
                other = {k: v for k, v in r["statuses"].items() if k not in ("200", "304")}
                print(f"  {who} {name}: {r['requests']:,} requests, statuses {r['statuses']}, "
                      f"p50 {r['latency_us']['p50'] / 1000:.2f} ms, p99.9 {r['latency_us']['p999'] / 1000:.2f} ms, "
                      f"max {r['latency_us']['max'] / 1000:.1f} ms"
                      + (f", socket errors {r['errors']}" if any(r["errors"].values()) else "")
                      + (" (unexpected statuses!)" if other else ""))
    if pw.get("dashboard"):
        dash = pw["dashboard"]
        print(f"  dashboard sessions: {dash['sessions']}, {dash['think_seconds']:g} s between pages, "
              f"{dash['page_loads']} page loads, {dash['error_count']} errors; per page median / max s: "
              + ", ".join(f"{k} {v['median_s']:.2f}/{v['max_s']:.2f}" for k, v in dash["pages"].items()))
    if pw.get("policy_full"):
        f = pw["policy_full"]
        print(f"  pullwarden full GET /v1/policy (first poll of a proxy): {f['seconds']:.3f} s, "
              f"{f['bytes'] / MB:.1f} MB, {f['bans']:,} bans")
    for warning in result["warnings"]:
        print(f"warning: {warning}")


def build_warnings(args, pw: dict, cs: dict | None, cs_error: str | None) -> list[str]:
    w = []
    if cs_error:
        w.append(f"CrowdSec was not measured: {cs_error}")
    for who, d in (("pullwarden", pw), ("CrowdSec", cs or {})):
        st = d.get("startup")
        # pullwarden's detection adds its own decisions to the bench's
        if st and (st["decisions"] < args.decisions or st["distinct_values"] != st["decisions"]):
            w.append(f"{who}'s start-up stream held {st['decisions']:,} decisions ({st['distinct_values']:,} "
                     f"distinct), not {args.decisions:,} or more, each once")
        # a 200 on the 304 path: a version that detection published, taken once per connection
        for name, ok in (("policy_304", {"304", "200"}), ("delta", {"200"})):
            r = d.get(name)
            if r and set(r["statuses"]) - ok:
                w.append(f"{who} {name}: statuses {r['statuses']} (expected only {', '.join(sorted(ok))})")
            if r and any(r["errors"].values()):
                w.append(f"{who} {name}: wrk socket errors {r['errors']}")
        if d.get("exit_code") not in (None, 0, -signal.SIGTERM):
            w.append(f"{who} exited with {d['exit_code']} when stopped")
    for item in pw.get("log_lines", []):
        w.append(f"pullwarden serve log, {item['count']}x: {item['line'][:300]}")
    if pw.get("detection_error"):
        w.append(f"could not read detect_runs afterwards: {pw['detection_error']}")
    if pw.get("jobs_error"):
        w.append(f"could not read ingest_runs/detect_runs afterwards: {pw['jobs_error']}")
    feed = pw.get("feeder")
    if feed and feed["behind_seconds"] > 1.0:
        w.append(f"the log feeder fell {feed['behind_seconds']:.1f} s behind its {feed['rate']:,} lines/s")
    jobs = pw.get("jobs", {})
    measured = [k for k in ("policy_304", "delta", "startup") if k in jobs]
    if args.feed_rate > 0 and measured and all(jobs[k]["ingest"]["lines"] == 0 for k in measured):
        w.append("no ingest run with new lines overlapped the measurements")
    return w


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench_enforcer.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10,
                    help="seconds of each wrk run: policy 304 and the delta polls of each server (default 10)")
    ap.add_argument("--decisions", type=int, default=100_000, help="active bans in each server (default 100,000)")
    ap.add_argument("--lines", type=int, default=2_000_000,
                    help="lines of the generated log that pullwarden tails (default 2,000,000)")
    ap.add_argument("--feed-rate", type=int, default=20_000,
                    help="lines/s appended to the tailed log during the load, so that ingest runs beside the "
                         "requests (default 20,000; 0: none)")
    ap.add_argument("--detect-interval", type=float, default=30.0,
                    help="serve's detect_interval, seconds between full detection passes (default 30; serve's own "
                         "is 300): a full pass over the log falls within the measured phases, as one does beside "
                         "an operator's polls every fifth minute")
    ap.add_argument("--startup-runs", type=int, default=3,
                    help="full start-up pulls per server; the median is judged (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the server needs the cores)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections kept open (default 8)")
    ap.add_argument("--dashboard-sessions", type=int, default=5,
                    help="dashboard users clicking through the pages during a second policy 304 run "
                         "(default 5; 0: no such run)")
    ap.add_argument("--think", type=float, default=1.0, help="seconds a dashboard user waits between pages (default 1)")
    ap.add_argument("--catchup-polls", action=argparse.BooleanOptionalAction, default=True,
                    help="during pullwarden's first ingest (a catch-up of --lines), poll /v1/policy (304) and the "
                         "CrowdSec stream (deltas) at once, paced, and report their p99 (default on)")
    ap.add_argument("--catchup-connections", type=int, default=4,
                    help="wrk connections of each poller during the catch-up (default 4)")
    ap.add_argument("--catchup-delay-ms", type=int, default=5,
                    help="ms each of those connections waits between polls (default 5: at most ~800 polls/s "
                         "per poller)")
    ap.add_argument("--skip-crowdsec", action="store_true", help="measure pullwarden only")
    ap.add_argument("--crowdsec-wal", action="store_true",
                    help="run CrowdSec's SQLite with WAL (db_config.use_wal; Debian's config leaves it off)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pullwarden-bench-enforcer",
                    help="where the log, both databases, configs, server logs and wrk output go "
                         "(default /tmp/pullwarden-bench-enforcer); the generated log is reused from here")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    if args.duration < 1 or args.decisions < 1 or args.lines < 1 or args.startup_runs < 1 or args.feed_rate < 0:
        ap.error("--duration, --decisions, --lines and --startup-runs must be at least 1, --feed-rate at least 0")
    if args.connections < args.threads:
        ap.error("--connections must be at least --threads")
    for tool, pkg in (("wrk", "wrk"), ("curl", "curl")):
        if not shutil.which(tool):
            sys.exit(f"bench_enforcer: {tool} not found; on Debian: apt-get install -y {pkg}")

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    log = ensure_log(workdir, args.lines, log_end(utcnow()))
    children = Children()
    pw: dict = {}
    cs, cs_error = None, None
    interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        pw = bench_pullwarden(args, workdir, log, children)
        if args.skip_crowdsec:
            cs_error = "--skip-crowdsec"
        else:
            try:
                cs = bench_crowdsec(args, workdir, children)
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                cs_error = str(e)
                say(f"CrowdSec failed: {e}")
    except KeyboardInterrupt:
        interrupted = True
    except BenchError as e:
        children.stop_all()
        sys.exit(f"bench_enforcer: {e}")
    finally:
        children.stop_all()
    if interrupted:
        sys.exit("bench_enforcer: interrupted; every process it started was stopped")

    import duckdb
    import uvicorn
    result = {
        "context": {"decisions": args.decisions, "lines": args.lines, "feed_rate": args.feed_rate,
                    "duration": args.duration, "threads": args.threads, "connections": args.connections,
                    "startup_runs": args.startup_runs, "workdir": str(workdir), "log": str(log),
                    "pullwarden_cmd": pullwarden_cmd(), "pullwarden_revision": git_revision(),
                    "python": platform.python_version(), "duckdb": duckdb.__version__,
                    "uvicorn": uvicorn.__version__,
                    "crowdsec": f"CrowdSec {cs['version']}" if cs else "CrowdSec not measured",
                    "wrk": tool_version(["wrk", "-v"]).split(" Copyright")[0], "cpus": os.cpu_count(),
                    "load_before": load_before, "load_after": loadavg()},
        "pullwarden": pw,
        "crowdsec": cs,
        "crowdsec_error": cs_error,
        "rows": rows_of(pw, cs),
        "warnings": build_warnings(args, pw, cs, cs_error),
    }
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)


if __name__ == "__main__":
    main()

"""Soak: `pullwarden serve` fed a growing, rotating log for half an hour while simulated days
pass, to see that the database file stops growing once retention deletes old events, that
serve's memory stays flat, and that no line is lost.

    python bench/soak.py                      # 30 minutes: 450 simulated days at 500 lines/s
    python bench/soak.py --minutes 5 --json   # a short look; one JSON object at the end

serve runs as a subprocess on a simulated clock (`serve --clock-start/--clock-rate/--clock-origin`,
default a day every 4 s), and this script stamps each line with the same clock, writes
`access.log` at a steady --rate lines a (wall-clock) second, and rotates it at every simulated
midnight as logrotate does (access.log -> access.log.1 -> … -> access.log.30, the oldest deleted;
`--rotate dateext`: access.log-YYYYMMDD). serve tail-ingests `access.log*`, detects, and prunes once a simulated day: events older than
keep_events_days (35) go, and roll-ups older than keep_rollups_days (400). Every minute it prints the simulated day, the database file's size
(with its WAL), serve's RSS, lines written, read and stored (from /metrics), the events kept,
and what is lost so far; at the end it lets serve catch up and prints a summary. lost =
written - stored - rejected must be 0, and so must lines stored twice (stored + rejected -
written); the exit status is 1 otherwise.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import genlogs

ROTATIONS = 30      # rotated files kept beside access.log (logrotate's `rotate 30`: two minutes at a day every 4 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def file_mb(db: Path) -> tuple[float, float]:
    """The database file's size and its WAL's, in MiB."""
    size = db.stat().st_size if db.exists() else 0
    wal = Path(f"{db}.wal")
    return size / 2**20, (wal.stat().st_size if wal.exists() else 0) / 2**20


def metrics(url: str, key: str) -> dict[str, float]:
    req = urllib.request.Request(url + "/metrics", headers={"X-Api-Key": key})
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Log:
    """access.log growing at a steady rate, stamped with the simulated clock, rotated at each
    simulated midnight."""

    def __init__(self, folder: Path, clock, rate: float, lines_hint: int, seed: int = 7, dateext: bool = False):
        self.folder, self.clock, self.rate, self.dateext = folder, clock, rate, dateext
        self.gen = self._requests(seed, max(lines_hint, 1000))
        self.written = 0
        self.day = clock().date()
        self.rotations = 0
        self.out = open(folder / "access.log", "a")  # noqa: SIM115 - open while the log grows

    @staticmethod
    def _requests(seed: int, hint: int):
        """genlogs' requests without end: a new pool of clients every ``hint`` lines (churn)."""
        for k in itertools.count():
            yield from genlogs.requests(random.Random(seed + k), hint, datetime(2026, 1, 1, tzinfo=UTC))

    def rotate(self) -> None:
        self.out.close()
        if self.dateext:
            # logrotate's dateext: one rename, access.log -> access.log-YYYYMMDD; the oldest deleted
            (self.folder / "access.log").rename(self.folder / f"access.log-{self.day:%Y%m%d}")
            for old in sorted(self.folder.glob("access.log-*"))[:-ROTATIONS]:
                old.unlink()
            self.out = open(self.folder / "access.log", "a")  # noqa: SIM115 - as above
            self.rotations += 1
            return
        oldest = self.folder / f"access.log.{ROTATIONS}"
        oldest.unlink(missing_ok=True)
        for n in range(ROTATIONS - 1, 0, -1):
            p = self.folder / f"access.log.{n}"
            if p.exists():
                p.rename(self.folder / f"access.log.{n + 1}")
        (self.folder / "access.log").rename(self.folder / "access.log.1")
        self.out = open(self.folder / "access.log", "a")  # noqa: SIM115 - as above
        self.rotations += 1

    def write_until(self, target: int) -> None:
        """Write lines until ``target`` have been written in all, each stamped now."""
        now = self.clock()
        if now.date() != self.day:
            self.rotate()
            self.day = now.date()
        stamp = now.replace(tzinfo=UTC)
        chunk = []
        while self.written + len(chunk) < target:
            r = next(self.gen)
            chunk.append(genlogs.render("main", (r[0], r[1], stamp, *r[3:])) + "\n")
        self.out.write("".join(chunk))
        self.out.flush()
        self.written += len(chunk)

    def close(self) -> None:
        self.out.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="How long to feed serve (wall clock; default 30).")
    ap.add_argument("--rate", type=float, default=500.0, help="Lines a wall-clock second (default 500).")
    ap.add_argument("--clock-rate", type=float, default=21600.0,
                    help="Simulated seconds per wall-clock second (default 21600: a day every 4 s, 450 days in 30 "
                    "min, past keep_events_days and keep_rollups_days).")
    ap.add_argument("--start", default="2026-01-01T00:00:00", help="The simulated clock's start (UTC).")
    ap.add_argument("--rotate", choices=["numbered", "dateext"], default="numbered",
                    help="logrotate's way: numbered (access.log.1 … .30, every file renamed at each rotation; the "
                    "default) or dateext (access.log-YYYYMMDD, one rename).")
    ap.add_argument("--keep-events-days", type=int, default=35, help="keep_events_days for serve (default 35).")
    ap.add_argument("--keep-rollups-days", type=int, default=400, help="keep_rollups_days for serve (default 400).")
    ap.add_argument("--workdir", default=None, help="Folder for the logs and the database (default: a new temporary one).")
    ap.add_argument("--json", action="store_true", help="One JSON object at the end (the minute lines go to stderr).")
    args = ap.parse_args()

    from core.clock import Simulated, parse_time
    from core.store import open_store
    from enforcer.keys import create_key

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pullwarden-soak-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    db = work / "soak.duckdb"
    store = open_store(str(db))
    key = create_key(store, f"soak-{os.getpid()}", "admin", datetime.now(UTC).replace(tzinfo=None))
    store.close()

    start = parse_time(args.start)
    origin = time.time() + 3.0            # serve and the log writer follow one clock from here
    clock = Simulated(start, args.clock_rate, origin)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")},
           "PULLWARDEN_DB": str(db), "PULLWARDEN_SOURCES": str(logs / "access.log*"),
           "PULLWARDEN_KEEP_EVENTS_DAYS": str(args.keep_events_days),
           "PULLWARDEN_KEEP_ROLLUPS_DAYS": str(args.keep_rollups_days),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    serve_log = open(work / "serve.log", "w")  # noqa: SIM115 - serve writes it till the end
    serve = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port),
                              "--clock-start", start.isoformat(), "--clock-rate", str(args.clock_rate),
                              "--clock-origin", str(origin)],
                             env=env, cwd=work, stdout=serve_log, stderr=subprocess.STDOUT)
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    say(f"soak: {work}, serve pid {serve.pid} on {url}, {args.rate:.0f} lines/s for {args.minutes:g} min, "
        f"a simulated day every {86400 / args.clock_rate:g} s, keep_events_days {args.keep_events_days}, "
        f"keep_rollups_days {args.keep_rollups_days}")
    while time.time() < origin:
        time.sleep(0.1)
    deadline = time.time() + 60
    while True:
        try:
            metrics(url, key)
            break
        except OSError:
            if serve.poll() is not None or time.time() > deadline:
                raise SystemExit(f"serve did not start: see {work / 'serve.log'}")
            time.sleep(0.5)

    # the address and image pools of a week of this traffic: a mirror's clients come back day
    # after day, which is what makes the hourly roll-ups smaller than the events they count
    feed = Log(logs, clock, args.rate, int(args.rate * 7 * 86400 / args.clock_rate), dateext=args.rotate == "dateext")
    rows: list[dict] = []
    say(f"{'min':>4} {'sim day':>10} {'file MiB':>9} {'wal MiB':>8} {'RSS MiB':>8} {'written':>9} {'read':>9} "
        f"{'stored':>9} {'kept':>8} {'lost':>5} {'twice':>6}")

    def sample(minute: float) -> dict:
        m = metrics(url, key)
        size, wal = file_mb(db)
        row = {"minute": round(minute, 1), "sim_time": clock().isoformat(timespec="seconds"), "file_mib": round(size, 1),
               "wal_mib": round(wal, 1), "rss_mib": round(rss_mb(serve.pid), 1), "written": feed.written,
               "read": int(m["pullwarden_ingest_lines_total"]), "stored": int(m["pullwarden_ingest_events_total"]),
               "rejected": int(m["pullwarden_ingest_rejects_total"]), "kept": int(m["pullwarden_events"]),
               "rotations": feed.rotations}
        # a line not read yet is in flight, not lost: lost counts only the lines serve has read
        row["lost"] = row["read"] - row["stored"] - row["rejected"]
        # stored beyond what was written: read twice (a line in flight only hides some of it)
        row["twice"] = max(0, row["stored"] + row["rejected"] - row["written"])
        rows.append(row)
        say(f"{row['minute']:>4g} {row['sim_time'][:10]:>10} {row['file_mib']:>9.1f} {row['wal_mib']:>8.1f} "
            f"{row['rss_mib']:>8.1f} {row['written']:>9,} {row['read']:>9,} {row['stored']:>9,} {row['kept']:>8,} "
            f"{row['lost']:>5} {row['twice']:>6}")
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
        feed.close()
        # every line read: wait for serve to catch up (a last line waits 5 s of idleness)
        caught = time.time() + 180
        while time.time() < caught:
            m = metrics(url, key)
            if m["pullwarden_ingest_lines_total"] >= feed.written:
                break
            time.sleep(2)
        last = sample((time.time() - t0) / 60)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
    tables = {}
    if serve.returncode == 0:
        store = open_store(str(db), read_only=True)
        for t in ("events", "facts_hourly", "blob_hourly", "xff_hourly", "ip_prefix", "findings", "decisions"):
            tables[t] = store.value(f"select count(*) from {t}")
        blocks = store.records("pragma database_size")[0]
        store.close()
    deleting = next((r for r in rows if r["kept"] < r["stored"]), None)
    after = [r for r in rows if deleting and r["minute"] >= deleting["minute"]]
    summary = {
        "workdir": str(work), "minutes": args.minutes, "lines_per_second": args.rate, "clock_rate": args.clock_rate,
        "simulated_days": round((clock() - start).total_seconds() / 86400, 1), "keep_events_days": args.keep_events_days,
        "keep_rollups_days": args.keep_rollups_days,
        "written": feed.written, "read": last["read"], "stored": last["stored"], "rejected": last["rejected"],
        "lost": max(0, feed.written - last["stored"] - last["rejected"]),
        "duplicated": max(0, last["stored"] + last["rejected"] - feed.written), "events_kept": last["kept"],
        "rotations": feed.rotations,
        "retention_from_minute": deleting["minute"] if deleting else None,
        "file_mib_when_retention_began": deleting["file_mib"] if deleting else None,
        "file_mib_max_after": max((r["file_mib"] for r in after), default=None),
        "file_mib_end": last["file_mib"], "rss_mib_max": max(r["rss_mib"] for r in rows),
        "rss_mib_end": last["rss_mib"], "serve_exit": serve.returncode, "rows_at_end": tables,
        "blocks_at_end": {k: blocks[k] for k in ("total_blocks", "used_blocks", "free_blocks")} if tables else None,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\nwritten {summary['written']:,} lines, stored {summary['stored']:,}, rejected {summary['rejected']:,}, "
              f"lost {summary['lost']:,}, stored twice {summary['duplicated']:,}; {summary['simulated_days']} simulated days, {feed.rotations} rotations; "
              f"events kept at the end {summary['events_kept']:,}")
        if deleting:
            print(f"retention deleting from minute {deleting['minute']:g}: file {deleting['file_mib']:.1f} MiB then, "
                  f"at most {summary['file_mib_max_after']:.1f} MiB after, {summary['file_mib_end']:.1f} MiB at the end")
        else:
            print("retention never deleted: run longer, or lower --keep-events-days")
        if tables:
            print("rows at the end: " + ", ".join(f"{t} {n:,}" for t, n in tables.items())
                  + f"; blocks {summary['blocks_at_end']}")
        print(f"serve RSS: at most {summary['rss_mib_max']:.1f} MiB, {summary['rss_mib_end']:.1f} MiB at the end; "
              f"serve exited with {serve.returncode}")
    if summary["lost"] or summary["duplicated"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

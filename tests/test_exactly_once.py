"""Exactly-once ingest: re-runs, appends, rotation, truncation, .gz, partial lines, kill -9, --follow.

Every line written carries its index n in the bytes field (and in the tag), so "each line
stored exactly once" is a statement about the set of `bytes` values in `events`.
"""
from __future__ import annotations

import gzip
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.settings import load
from core.store import open_store
from ingest.pipeline import Ingester
from ingest.sources import IDLE_SECONDS


# -- building logs ---------------------------------------------------------------------------

def line(n: int) -> str:
    """One nginx "main" line whose bytes field (and tag, and address) encode n."""
    ip = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
    return (f'{ip} - - [20/Nov/2024:11:02:07 +0800] "GET /v2/docker.io/library/nginx/manifests/{n} HTTP/1.1" '
            f'200 {n} "-" "containerd/v1.7.22" "-"\n')


def text(start: int, stop: int) -> str:
    return "".join(line(n) for n in range(start, stop))


def append(path: Path, start: int, stop: int) -> Path:
    with open(path, "a") as f:
        f.write(text(start, stop))
    return path


def write_many(path: Path, total: int, block: int = 50_000) -> Path:
    """Large files, fast: build each block of lines as one string."""
    with open(path, "w") as f:
        for start in range(0, total, block):
            f.write(text(start, min(start + block, total)))
    return path


# -- driving and checking the store -----------------------------------------------------------

class Db:
    """A store under tmp_path, settings free of the caller's environment and pullwarden.toml."""

    def __init__(self, root: Path, **overrides):
        self.cfg = load(None, {"db": str(root / "db.duckdb"), **overrides}, environ={})
        self.store = open_store(self.cfg.db)

    def ingest(self, *patterns, clock=time.time):
        return Ingester(self.store, self.cfg, clock=clock).run([str(p) for p in patterns])

    def stored(self) -> list[int]:
        return [n for (n,) in self.store.execute("select bytes from events order by bytes")]

    def files(self) -> dict[str, int]:
        return {path: fid for fid, path in self.store.execute("select file_id, path from files")}


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # load() reads ./pullwarden.toml: make sure there is none
    d = Db(tmp_path)
    yield d
    d.store.close()


def assert_exactly_once(store, total: int) -> None:
    """Lines 0 .. total-1 each stored once, and no line broken into a reject."""
    assert store.execute("select bytes, count(*) from events group by bytes having count(*) <> 1") == []
    # no duplicates + count == total + min 0 + max total-1  =>  exactly {0, ..., total-1}
    assert store.execute("select count(*), min(bytes), max(bytes) from events")[0] == (
        (total, 0, total - 1) if total else (0, None, None))
    assert store.value("select coalesce(sum(rejects), 0) from files") == 0


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    env.update(extra)
    return env


def cli(args: list[str], cwd: Path, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", *args],
                            cwd=cwd, env=env, **kwargs)


# -- 1. re-run ---------------------------------------------------------------------------------

def test_rerun_adds_nothing(db, tmp_path):
    log = append(tmp_path / "access.log", 0, 50)
    first = db.ingest(log)
    assert first.total("lines") == first.total("events") == 50
    second = db.ingest(log)
    assert second.total("lines") == second.total("events") == 0
    assert_exactly_once(db.store, 50)
    assert db.store.value("select count(*) from files") == 1


# -- 2. appends ---------------------------------------------------------------------------------

def test_appended_lines_and_only_those(db, tmp_path):
    log = append(tmp_path / "access.log", 0, 30)
    db.ingest(log)
    append(log, 30, 45)
    report = db.ingest(log)
    assert report.total("lines") == report.total("events") == 15
    assert_exactly_once(db.store, 45)
    append(log, 45, 46)             # a single line, then nothing
    assert db.ingest(log).total("lines") == 1
    assert db.ingest(log).total("lines") == 0
    assert_exactly_once(db.store, 46)


# -- 3. rotation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["{dir}", "{dir}/access.log*"], ids=["directory", "glob"])
def test_rotation_by_rename(db, tmp_path, pattern):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = append(logs / "access.log", 0, 40)
    db.ingest(pattern.format(dir=logs))
    (old_id,) = db.files().values()

    append(log, 40, 47)             # written after the last run, before logrotate ran
    log.rename(logs / "access.log.1")
    append(logs / "access.log", 47, 60)

    report = db.ingest(pattern.format(dir=logs))
    assert report.total("lines") == 20
    assert_exactly_once(db.store, 60)
    files = db.files()
    assert files[str(logs / "access.log.1")] == old_id      # same content, same row, new path
    assert files[str(logs / "access.log")] != old_id
    assert len(files) == 2

    assert db.ingest(pattern.format(dir=logs)).total("lines") == 0
    assert_exactly_once(db.store, 60)


# -- 4. truncation -------------------------------------------------------------------------------

@pytest.mark.parametrize("new_lines", [3, 200], ids=["shorter", "longer"])
def test_copytruncate(db, tmp_path, new_lines):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = append(logs / "access.log", 0, 50)
    db.ingest(logs)
    append(log, 50, 55)
    shutil.copyfile(log, logs / "access.log.1")     # logrotate copytruncate: copy, then truncate
    log.write_text("")
    append(log, 55, 55 + new_lines)

    report = db.ingest(logs)
    assert report.total("lines") == 5 + new_lines
    assert_exactly_once(db.store, 55 + new_lines)
    assert db.ingest(logs).total("lines") == 0


def test_truncated_in_place_is_read_from_the_start(db, tmp_path):
    log = append(tmp_path / "access.log", 0, 50)
    db.ingest(log)
    log.write_text(text(50, 53))    # truncated, three different lines written
    report = db.ingest(log)
    assert report.total("lines") == 3
    assert_exactly_once(db.store, 53)


# -- 5. gzip ---------------------------------------------------------------------------------------

def gzip_copy(src_text: str, dest: Path) -> Path:
    with gzip.open(dest, "wt") as f:
        f.write(src_text)
    return dest


def test_gz_is_read_once(db, tmp_path):
    gz = gzip_copy(text(0, 80), tmp_path / "access.log.2.gz")
    assert db.ingest(gz).total("lines") == 80
    assert db.store.value("select count(*) from archives_read") == 1
    second = db.ingest(gz)
    assert second.files == []                       # a complete .gz is not even opened for reading
    assert_exactly_once(db.store, 80)


def test_gz_copy_of_an_ingested_file_adds_nothing(db, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    plain = append(logs / "access.log.1", 0, 60)
    db.ingest(logs)
    gzip_copy(plain.read_text(), logs / "access.log.1.gz")
    assert db.ingest(logs).total("lines") == 0      # plain file and its gz side by side
    plain.unlink()
    assert db.ingest(logs).total("lines") == 0
    assert_exactly_once(db.store, 60)
    assert db.store.value("select count(*) from files") == 1


def test_gz_of_a_partly_ingested_file_adds_the_rest(db, tmp_path):
    """logrotate with compress: lines written after the last run are only in the .gz now."""
    logs = tmp_path / "logs"
    logs.mkdir()
    plain = append(logs / "access.log", 0, 60)
    db.ingest(logs)
    append(plain, 60, 75)
    gzip_copy(plain.read_text(), logs / "access.log.1.gz")
    plain.unlink()
    assert db.ingest(logs).total("lines") == 15
    assert_exactly_once(db.store, 75)


@pytest.mark.parametrize("seen_before", [False, True], ids=["never-seen", "partly-ingested"])
def test_plain_file_and_its_gz_in_the_same_pass(db, tmp_path, seen_before):
    """Both exist together while logrotate's gzip runs (it unlinks the plain file last), or in
    a directory of archives. Same content, same fingerprint: the lines must be stored once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    plain = append(logs / "access.log.1", 0, 60)
    if seen_before:
        db.ingest(logs)
        append(plain, 60, 75)
    gzip_copy(plain.read_text(), logs / "access.log.1.gz")
    db.ingest(logs)
    assert_exactly_once(db.store, 75 if seen_before else 60)


def test_gz_snapshot_does_not_retire_the_live_file(db, tmp_path):
    """logrotate's `copy` + `compress` (or `gzip -k`): the .gz is a snapshot and the plain
    file keeps growing; its later lines must still be read."""
    logs = tmp_path / "logs"
    logs.mkdir()
    live = append(logs / "access.log", 0, 60)
    db.ingest(logs)
    gzip_copy(live.read_text(), logs / "access.log-20241120.gz")
    assert db.ingest(logs).total("lines") == 0
    append(live, 60, 70)
    assert db.ingest(logs).total("lines") == 10
    assert_exactly_once(db.store, 70)


# -- 6. a line still being written -------------------------------------------------------------------

def test_partial_last_line_waits_until_complete(db, tmp_path):
    log = tmp_path / "access.log"
    whole = line(5)
    cut = len(whole) // 2
    log.write_text(text(0, 5) + whole[:cut])
    now = time.time()
    os.utime(log, (now, now))
    fresh = lambda: now + 1         # noqa: E731 - the file changed a second ago

    assert db.ingest(log, clock=fresh).total("lines") == 5
    assert_exactly_once(db.store, 5)
    assert db.ingest(log, clock=fresh).total("lines") == 0     # still not taken

    with open(log, "a") as f:       # the writer finishes the line
        f.write(whole[cut:] + line(6))
    os.utime(log, (now + 2, now + 2))
    assert db.ingest(log, clock=lambda: now + 3).total("lines") == 2
    assert_exactly_once(db.store, 7)
    row = db.store.execute("select client_ip, reference, user_agent, status from events where bytes = 5")
    assert row == [("10.0.0.5", "5", "containerd/v1.7.22", 200)]


def test_partial_last_line_of_an_idle_file_is_taken_once(db, tmp_path):
    log = tmp_path / "access.log"
    log.write_text(text(0, 5) + line(5).rstrip("\n"))
    old = time.time() - IDLE_SECONDS - 5
    os.utime(log, (old, old))
    assert db.ingest(log).total("lines") == 6
    assert db.ingest(log).total("lines") == 0
    assert_exactly_once(db.store, 6)


# -- 7. kill -9 ----------------------------------------------------------------------------------------

KILL_TOTAL = 600_000


def test_kill_9_then_rerun_stores_every_line_once(tmp_path):
    log = write_many(tmp_path / "access.log", KILL_TOTAL)
    db_path = tmp_path / "db.duckdb"
    env = cli_env(PULLWARDEN_CHUNK_MB="4")      # ~20 chunks, so a kill lands between commits
    args = ["ingest", str(log), "--db", str(db_path), "--json"]

    def count() -> int:
        store = open_store(str(db_path))        # replays the WAL the killed process left
        try:
            assert store.execute("select bytes, count(*) from events group by bytes having count(*) <> 1") == []
            return store.value("select count(*) from events")
        finally:
            store.close()

    # Kill at growing delays until one kill left some but not all lines committed; every
    # state a kill leaves must already be duplicate-free (checked in count()). The delays go on
    # to 20 s because on a loaded machine (load 10 on 2 cores) the first commit took over 5 s.
    counts = []
    for delay in [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 14.0, 20.0]:
        proc = cli(args, tmp_path, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        counts.append(count())
        if any(0 < c < KILL_TOTAL for c in counts) and len(counts) >= 2:
            break
    assert any(0 < c < KILL_TOTAL for c in counts), f"no kill landed mid-ingest: {counts}"

    done = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lines"] == KILL_TOTAL - counts[-1]
    store = open_store(str(db_path))
    try:
        assert_exactly_once(store, KILL_TOTAL)
        assert store.value("select read_offset from files") == log.stat().st_size
    finally:
        store.close()


# -- 8. --follow ---------------------------------------------------------------------------------------

def test_follow_picks_up_appends_and_new_files(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    first = append(logs / "access.log", 0, 20)
    db_path = tmp_path / "db.duckdb"
    proc = cli(["ingest", str(logs), "--follow", "--json", "--db", str(db_path)], tmp_path,
               cli_env(PULLWARDEN_FOLLOW_INTERVAL="0.2"),
               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # One JSON object per pass that read something; read them on a thread to wait with a timeout.
    passes: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [passes.put(json.loads(s)) for s in proc.stdout], daemon=True).start()

    def lines_until(expected: int, timeout: float = 20) -> int:
        seen, deadline = 0, time.time() + timeout
        while seen < expected and time.time() < deadline:
            try:
                seen += passes.get(timeout=0.2)["lines"]
            except queue.Empty:
                pass
        return seen

    try:
        assert lines_until(20) == 20                # the first pass
        append(first, 20, 35)
        append(logs / "other.log", 35, 50)
        assert lines_until(30) == 30                # later passes: the appended lines and the new file
        time.sleep(1)                               # a few idle passes must not add anything
        assert passes.empty()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    store = open_store(str(db_path))
    try:
        assert_exactly_once(store, 50)
    finally:
        store.close()


def test_a_stopped_consumer_never_hangs_the_reader(tmp_path):
    """Ctrl-C between chunks: the reader thread must not block for ever on a full queue."""
    import threading
    from ingest.pipeline import prefetch
    from ingest.sources import Chunk
    for total, taken in ((2, 1), (50, 2)):      # the reader done (its end marker queued) or still reading
        chunks = (Chunk(b"x\n" * 10, 20 * (n + 1), 10) for n in range(total))
        done = threading.Event()

        def consume():
            gen = prefetch(chunks, tmp_path)
            for _n, _ in zip(range(taken), gen):
                time.sleep(0.2)   # the reader fills the queue meanwhile
            gen.close()           # leaves early, like a KeyboardInterrupt would
            done.set()
        threading.Thread(target=consume, daemon=True).start()
        assert done.wait(10), (total, taken)

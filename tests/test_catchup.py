"""serve's ingest catches up on a backlog with larger chunks, every core and more memory
(enforcer/catchup.py), goes back to its small footprint once it is live, and stores (and
detection decides) exactly what a live-only ingest of the same log does."""
from __future__ import annotations

import os
import threading
import time

import pytest

from core.settings import load
from core.store import open_store
from enforcer import catchup, jobs
from enforcer.service import Services
from ingest.pipeline import Ingester, waiting
from tests.conftest import write
from tests.enforcer_helpers import Clock, in_thread

LINE = ('{ip} - - [27/Nov/2026:11:{m:02d}:{s:02d} +0000] "GET /v2/library/nginx/manifests/{ref} HTTP/1.1" '
        '{status} {n} "-" "containerd/v1.7.22" "-"')


def backlog(path):
    """~5 MB: ordinary pulls from 200 addresses, and one address asking for 400 manifests that
    do not exist (the default error-storm rule bans it)."""
    lines = [LINE.format(ip=f"198.51.100.{n % 200}", m=n // 60 % 60, s=n % 60, ref=f"1.{n % 30}", status=200, n=n)
             for n in range(40_000)]
    lines += [LINE.format(ip="203.0.113.9", m=30, s=n % 60, ref=f"nope-{n}", status=404, n=n) for n in range(400)]
    return write(path, lines)


def make_services(tmp_path, name, **settings):
    cfg = load(None, {"db": str(tmp_path / f"{name}.duckdb"), "sources": [str(tmp_path / "access.log")],
                      "serve_catchup_chunk_mb": 1, **settings}, environ={})
    store = open_store(cfg.db)
    jobs.configure_store(store, cfg)
    return Services(store, cfg, clock=Clock())


@pytest.fixture
def small_slices(monkeypatch):
    """A backlog of a few MB stands for gigabytes: catch up above 1.5 MiB waiting, in 1 MiB slices
    (serve_catchup_chunk_mb = 1, make_services), until no more than 384 KiB wait; 1 MiB live slices."""
    monkeypatch.setattr(catchup, "CATCH_UP_BYTES", 3 << 19)
    monkeypatch.setattr(catchup, "CAUGHT_UP_BYTES", 384 << 10)
    monkeypatch.setattr(jobs, "INGEST_SLICE", 1 << 20)


def test_catch_up_on_when_far_behind_and_off_when_live(tmp_path, monkeypatch, small_slices):
    log = backlog(tmp_path / "access.log")
    services = make_services(tmp_path, "db")
    store = services.store
    live = (store.value("select current_setting('threads')"), store.value("select current_setting('memory_limit')"))
    slices = []
    real, commit = Ingester.run, Ingester._commit_chunk

    def run(self, patterns, plan=None):         # what each slice reads with (the real run follows)
        slices.append({"catching_up": services.catching_up, "chunk_mb": self.settings.chunk_mb,
                       "threads": store.value("select current_setting('threads')"),
                       "memory": store.value("select current_setting('memory_limit')"),
                       "waiting": waiting(store, [str(log)]), "chunks": 0})
        return real(self, patterns, plan)

    def count(self, *a):
        slices[-1]["chunks"] += 1
        return commit(self, *a)
    monkeypatch.setattr(Ingester, "run", run)
    monkeypatch.setattr(Ingester, "_commit_chunk", count)
    in_thread(lambda: jobs.ingest(services))

    assert store.value("select count(*) from events") == 40_400 and not services.backlog
    fast = [s for s in slices if s["catching_up"]]
    slow = [s for s in slices if not s["catching_up"]]
    assert fast and slow and slices.index(slow[0]) == len(fast)          # caught up, then live to the end
    # begun above CATCH_UP_BYTES, ended at CAUGHT_UP_BYTES: a rest just under the first is not read live
    assert fast[0]["waiting"] > 3 << 19 and all(s["waiting"] > 384 << 10 for s in fast)
    assert any(s["waiting"] <= 3 << 19 for s in fast) and all(s["waiting"] <= 384 << 10 for s in slow)
    for s in fast:
        # a slice is one chunk, one transaction, loaded on one thread: two threads leave partial
        # row groups that the next checkpoint rewrites (enforcer/catchup.py)
        assert s["chunk_mb"] == 1 and s["chunks"] == 1 and int(s["threads"]) == 1
        assert float(s["memory"].split()[0]) >= 90           # 96 MB, in MiB
    for s in slow:
        assert s["chunk_mb"] == 4 and (s["threads"], s["memory"]) == live
    # back to the small footprint, everything rolled up, and nothing waiting
    assert (store.value("select current_setting('threads')"),
            store.value("select current_setting('memory_limit')")) == live
    assert store.value("select last_rowid from rollup_state where name = 'events'") == \
        store.value("select max(seq) from events")
    assert not services.catching_up and not services.memory.held and waiting(store, [str(log)]) == 0
    store.close()


def test_the_roll_up_runs_beside_the_load_and_stops_at_what_was_there_before(tmp_path, monkeypatch, small_slices):
    """While a slice loads, the events of the slices before it are rolled up on another thread
    and connection, and not one past them: the roll-up of the slice being loaded waits for the
    next slice (or the live one after the last)."""
    from rules import rollup
    backlog(tmp_path / "access.log")
    services = make_services(tmp_path, "db")
    store = services.store
    loading = threading.Event()
    loads, rolls = [], []
    real_run, real_slice = Ingester.run, rollup._roll_up_slice

    def run(self, patterns, plan=None):
        before = store.value("select max(seq) from events")
        loading.set()
        try:
            return real_run(self, patterns, plan)
        finally:
            loading.clear()
            loads.append({"thread": threading.get_ident(), "catching_up": services.catching_up, "before": before,
                          "rolled": store.value("select last_rowid from rollup_state where name = 'events'")})

    def roll(s, *args):
        if services.catching_up:        # a catch-up's roll-up: is a load running beside it?
            rolls.append({"thread": threading.get_ident(), "beside": loading.wait(2)})
        return real_slice(s, *args)
    monkeypatch.setattr(Ingester, "run", run)
    monkeypatch.setattr(rollup, "_roll_up_slice", roll)
    in_thread(lambda: jobs.ingest(services))

    fast = [x for x in loads if x["catching_up"]]
    assert len(fast) >= 3 and rolls
    assert all(r["beside"] and r["thread"] != fast[0]["thread"] for r in rolls), rolls
    assert fast[0]["rolled"] is None            # nothing before the first slice
    for load in fast[1:]:                       # up to the slice before, not into this one
        assert load["rolled"] == load["before"]
    assert store.value("select last_rowid from rollup_state where name = 'events'") == \
        store.value("select max(seq) from events")
    store.close()


def test_a_roll_up_that_does_not_fit_beside_the_load_is_done_later(tmp_path, monkeypatch, small_slices, caplog):
    """DuckDB out of memory in the roll-up beside a slice (the two share serve_catchup_memory_mb)
    fails neither the slice nor the job: the events are rolled up later, once each."""
    import duckdb

    from rules import rollup
    backlog(tmp_path / "access.log")
    services = make_services(tmp_path, "db")
    real = rollup._roll_up_slice

    def tight(*args):
        if threading.current_thread().name.startswith("pullwarden-rollup"):
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block (injected)")
        return real(*args)
    monkeypatch.setattr(rollup, "_roll_up_slice", tight)
    in_thread(lambda: jobs.ingest(services))
    store = services.store
    assert "ingest" not in services.jobs or not services.jobs["ingest"].get("error")
    assert "did not fit in serve_catchup_memory_mb" in caplog.text
    assert store.value("select count(*) from events") == 40_400
    assert store.value("select last_rowid from rollup_state where name = 'events'") == \
        store.value("select max(seq) from events")
    assert store.value("select sum(requests) from facts_hourly") == 40_400
    store.close()


def test_a_caught_up_store_holds_and_decides_what_a_live_one_does(tmp_path, monkeypatch, small_slices):
    backlog(tmp_path / "access.log")
    fast = make_services(tmp_path, "fast")
    in_thread(lambda: jobs.ingest(fast))
    monkeypatch.setattr(catchup, "CATCH_UP_BYTES", 1 << 60)             # never behind: live slices only
    slow = make_services(tmp_path, "slow")
    in_thread(lambda: jobs.ingest(slow))

    def held(s):
        events = s.store.execute("""select * exclude (seq, file_id) from events order by all""")
        facts = s.store.execute("""select hour, client_ip, sum(requests), sum(bytes), sum(s404) from facts_hourly
                                   group by all order by all""")
        return events, facts
    assert held(fast) == held(slow) and len(held(fast)[0]) == 40_400
    for s in (fast, slow):
        in_thread(lambda: jobs.detection(s))

    def bans(s):
        return s.store.execute("select scope, value, rule, reason, until from decisions order by all")
    assert bans(fast) == bans(slow)
    assert {b[1] for b in bans(fast)} == {"203.0.113.9"} and "error-storm" in {b[2] for b in bans(fast)}
    fast.store.close()
    slow.store.close()


def test_a_large_chunk_passes_through_python_a_piece_at_a_time(run, workdir, monkeypatch):
    """A 16 MiB chunk for DuckDB is read, checked and written 1 MiB at a time (ingest.pipeline
    READ_PIECE): Python's peak stays near the piece, not several times the chunk (a 64 MiB read
    was four times its size in copies); the chunks committed are still chunk-sized, every line once."""
    import tracemalloc

    from ingest import pipeline
    monkeypatch.setattr(pipeline, "READ_PIECE", 1 << 20)
    lines = [LINE.format(ip=f"198.51.100.{n % 200}", m=n // 60 % 60, s=n % 60, ref=f"{n}", status=200, n=n)
             for n in range(200_000)]                                                 # ~25 MB
    log = write(workdir / "access.log", lines)
    r = run(chunk_mb=16)
    sizes = []
    real = Ingester._commit_chunk

    def commit(self, path, chunk, *a):
        sizes.append(chunk.size)
        return real(self, path, chunk, *a)
    monkeypatch.setattr(Ingester, "_commit_chunk", commit)
    tracemalloc.start()
    try:
        report = r.ingest(log, in_place_max=0)          # copied chunk by chunk, as a live log is
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.total("lines") == 200_000 and r.store.value("select count(distinct bytes) from events") == 200_000
    assert peak < 12 << 20, peak                            # 56 MB when read 16 MiB at a time
    assert sum(sizes) == log.stat().st_size and len(sizes) == 2 and sizes[0] >= 15 << 20


def test_a_slice_reads_no_chunk_beyond_its_end(run, workdir, monkeypatch):
    """A run that stops after max_bytes (a slice) does not read, check and write the chunks after
    it on the reader thread, only to drop them (two 64 MiB chunks ahead per 128 MiB slice before)."""
    from ingest import pipeline, sources
    monkeypatch.setattr(pipeline, "READ_PIECE", 256 << 10)
    lines = [LINE.format(ip=f"198.51.100.{n % 200}", m=n // 60 % 60, s=n % 60, ref=f"{n}", status=200, n=n)
             for n in range(40_000)]                                                   # ~5 MB
    log = write(workdir / "access.log", lines)
    read = []
    real = sources.read_chunks

    def counted(*a, **kw):
        for chunk in real(*a, **kw):
            read.append(len(chunk.data))
            yield chunk
    monkeypatch.setattr(pipeline, "read_chunks", counted)
    r = run(chunk_mb=1)
    report = r.ingest(log, in_place_max=0, max_bytes=1 << 20)         # one 1 MiB chunk, copied
    assert report.more and 0 < report.total("lines") < 40_000
    done = r.store.value("select read_offset from files")
    assert done >= 1 << 20 and sum(read) == done, (done, sum(read))   # nothing past it


# serve with a catch-up above 2 MiB waiting, in 1 MiB slices, live again at 1 MiB: a backlog of
# ~10 MB stands for gigabytes (a module's constants, set before the command runs)
# A real serve whose catch-up pauses 0.4 s after each 1 MiB slice, so that a kill lands between
# slices however fast the machine is (on a quiet one the whole backlog took under 2 s)
SERVE = ("import time; from enforcer import catchup; catchup.CATCH_UP_BYTES = 2 << 20; "
         "catchup.CAUGHT_UP_BYTES = 1 << 20; real = catchup.catch_up\n"
         "def slowly(*a):\n    report = real(*a); time.sleep(0.4); return report\n"
         "catchup.catch_up = slowly\n"
         "from cli.main import main; main()")


def held(store):
    """What an ingest leaves: every event (not its chunk's seq), and the roll-ups summed per key
    (a slice boundary splits a group into two partial rows)."""
    return {
        "events": store.execute("select * exclude (seq, file_id) from events order by all"),
        "facts": store.execute("""select hour, client_ip, user_agent, remote_user, registry, repository,
                                      sum(requests), sum(manifest_gets), sum(blob_gets), sum(bytes), sum(s2xx),
                                      sum(s404), sum(with_xff)
                                  from facts_hourly group by all order by all"""),
        "blobs": store.execute("select hour, client_ip, blob, sum(downloads), sum(bytes) from blob_hourly "
                               "group by all order by all"),
        "prefixes": store.execute("select * from ip_prefix order by all"),
        "rolled": store.value("select last_rowid from rollup_state where name = 'events'")
                  == store.value("select max(seq) from events"),
    }


def test_serve_killed_mid_catch_up_then_restarted_holds_what_an_uninterrupted_catch_up_does(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys

    import httpx

    from tests.enforcer_helpers import free_port
    # manifests and blobs (the blob roll-up too) from 1,757 addresses, some of them missing
    lines = [LINE.format(ip=f"198.51.{n % 7}.{n % 251}", m=n // 60 % 60, s=n % 60,
                         ref=f"1.{n % 30}" if n % 2 else f"sha256:{n % 50:064x}", status=(200, 200, 404)[n % 3], n=n)
             .replace("/manifests/sha256:", "/blobs/sha256:") for n in range(80_000)]          # ~10 MB
    log = write(tmp_path / "access.log", lines)
    db = tmp_path / "serve.duckdb"
    port = free_port()
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'db = "{db}"\nsources = ["{log}"]\nhost = "127.0.0.1"\nport = {port}\n'
                   "ingest_interval = 1\nserve_catchup_chunk_mb = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}

    def serve():
        return subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--config", str(cfg)], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def look():
        store = open_store(str(db))             # replays the WAL the killed server left
        try:
            assert store.execute("select bytes, count(*) from events group by bytes having count(*) <> 1") == []
            return (store.value("select count(*) from events"),
                    store.value("select last_rowid from rollup_state where name = 'events'"))
        finally:
            store.close()

    # kill -9 at growing delays until one lands in the catch-up: some events stored, not all
    # (each state a kill leaves is checked duplicate-free in look())
    for delay in (2, 3, 4, 6, 9, 14):
        proc = serve()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        if 0 < (left := look())[0] < len(lines):
            break
    assert 0 < left[0] < len(lines), left

    proc = serve()                              # the restart catches up on the rest
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not catch up"
            try:
                job = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["jobs"].get("ingest") or {}
                assert not job.get("error"), job
                if job.get("last_ok"):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0

    monkeypatch.setattr(catchup, "CATCH_UP_BYTES", 2 << 20)        # the same catch-up, uninterrupted
    monkeypatch.setattr(catchup, "CAUGHT_UP_BYTES", 1 << 20)
    monkeypatch.setattr(jobs, "INGEST_SLICE", 1 << 20)
    once = make_services(tmp_path, "once")
    in_thread(lambda: jobs.ingest(once))
    store = open_store(str(db))
    try:
        after, before = held(store), held(once.store)
        assert len(after["events"]) == len(lines) and after["rolled"] and before["rolled"]
        assert after == before
    finally:
        store.close()
        once.store.close()


def test_an_unreadable_backlog_does_not_hold_the_ingest_job(tmp_path, monkeypatch, small_slices):
    """A broken .gz counts as waiting (its size) but reads nothing: the catch-up does not go round
    for ever, the job ends and says which file."""
    log = backlog(tmp_path / "access.log")
    bad = tmp_path / "access.log.2.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 12_000)          # ~3 MB, not gzip inside
    services = make_services(tmp_path, "db", sources=[str(log), str(bad)])
    reports = []
    real = Ingester.run
    monkeypatch.setattr(Ingester, "run", lambda self, *a, **kw: reports.append(real(self, *a, **kw)) or reports[-1])
    job = threading.Thread(target=lambda: jobs.ingest(services))
    job.start()
    job.join(60)
    try:
        assert not job.is_alive(), f"still going after {len(reports)} runs"
    finally:
        services.stopping.set()
        job.join(10)
    assert services.store.value("select count(*) from events") == 40_400
    assert any(f.error and f.path == str(bad) for r in reports for f in r.files)
    services.store.close()

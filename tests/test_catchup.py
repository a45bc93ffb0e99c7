"""serve's ingest catches up on a backlog with larger chunks, every core and more memory
(enforcer/catchup.py), goes back to its small footprint once it is live, and stores (and
detection decides) exactly what a live-only ingest of the same log does."""
from __future__ import annotations

import os

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


def make_services(tmp_path, name):
    cfg = load(None, {"db": str(tmp_path / f"{name}.duckdb"), "sources": [str(tmp_path / "access.log")]}, environ={})
    store = open_store(cfg.db)
    jobs.configure_store(store, cfg)
    return Services(store, cfg, clock=Clock())


@pytest.fixture
def small_slices(monkeypatch):
    """A backlog of a few MB stands for gigabytes: catch up above 2 MiB waiting, 1 MiB slices."""
    monkeypatch.setattr(catchup, "CATCH_UP_BYTES", 2 << 20)
    monkeypatch.setattr(catchup, "CATCH_UP_SLICE", 1 << 20)
    monkeypatch.setattr(jobs, "INGEST_SLICE", 1 << 20)


def test_catch_up_on_when_far_behind_and_off_when_live(tmp_path, monkeypatch, small_slices):
    log = backlog(tmp_path / "access.log")
    services = make_services(tmp_path, "db")
    store = services.store
    live = (store.value("select current_setting('threads')"), store.value("select current_setting('memory_limit')"))
    slices = []
    real = Ingester.run

    def run(self, patterns, plan=None):         # what each slice reads with (the real run follows)
        slices.append({"catching_up": services.catching_up, "chunk_mb": self.settings.chunk_mb,
                       "threads": store.value("select current_setting('threads')"),
                       "memory": store.value("select current_setting('memory_limit')"),
                       "waiting": waiting(store, [str(log)])})
        return real(self, patterns, plan)
    monkeypatch.setattr(Ingester, "run", run)
    in_thread(lambda: jobs.ingest(services))

    assert store.value("select count(*) from events") == 40_400 and not services.backlog
    fast = [s for s in slices if s["catching_up"]]
    slow = [s for s in slices if not s["catching_up"]]
    assert fast and slow and slices.index(slow[0]) == len(fast)          # caught up, then live to the end
    assert all(s["waiting"] > 2 << 20 for s in fast) and all(s["waiting"] <= 2 << 20 for s in slow)
    for s in fast:
        assert s["chunk_mb"] == 64 and int(s["threads"]) == min(os.cpu_count() or 1, 96 // 48)
        assert float(s["memory"].split()[0]) >= 90           # 96 MB, in MiB
    for s in slow:
        assert s["chunk_mb"] == 4 and (s["threads"], s["memory"]) == live
    # back to the small footprint, and nothing waiting
    assert (store.value("select current_setting('threads')"),
            store.value("select current_setting('memory_limit')")) == live
    assert not services.catching_up and not services.memory.held and waiting(store, [str(log)]) == 0
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

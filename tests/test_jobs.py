"""serve's jobs: detection waits for a backlog, retries once with more memory, and gives the
server's small memory limit back whatever happens."""
from __future__ import annotations

import threading
import time

import duckdb
import pytest

from core.settings import load
from core.store import open_store
from enforcer import jobs
from enforcer.service import Services
from tests.detect_helpers import add_events, storm
from tests.enforcer_helpers import Clock, in_thread


@pytest.fixture
def services(tmp_path):
    cfg = load(None, {"db": str(tmp_path / "db.duckdb"), "serve_memory_mb": 64, "detect_memory_mb": 96},
               environ={})
    store = open_store(cfg.db)
    jobs.configure_store(store, cfg)
    s = Services(store, cfg, clock=Clock())
    add_events(store, storm("203.0.113.7", hours=3))
    yield s
    store.close()


def limit(services) -> str:
    return services.store.value("select current_setting('memory_limit')")


def test_detection_waits_while_a_backlog_is_read(services, monkeypatch):
    monkeypatch.setattr(jobs, "BACKLOG_WAIT", 0.05)
    services.backlog = True
    job = threading.Thread(target=jobs._guarded(services, "detect", lambda: jobs.detection(services)))
    job.start()
    time.sleep(0.5)
    assert job.is_alive() and not services.store.value("select count(*) from detect_runs")
    services.backlog = False                                    # the backlog is in: judge it
    job.join(30)
    assert services.jobs["detect"]["error"] is None and services.store.value("select count(*) from detect_runs") == 1


def test_a_pass_that_does_not_fit_is_tried_once_with_twice_the_memory(services, monkeypatch):
    import rules.detect
    seen = []
    real = rules.detect.detect

    def tight(store, *a, **kw):
        seen.append(limit(services))
        if len(seen) == 1:
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
        return real(store, *a, **kw)
    monkeypatch.setattr(rules.detect, "detect", tight)
    in_thread(lambda: jobs.detection(services))
    assert [s.split(".")[0] for s in seen] == ["91", "183"]      # 96 MB, then 192 MB (in MiB)
    assert limit(services).startswith("61")                       # back to serve's 64 MB


def test_a_pass_that_fails_twice_is_a_failed_job_and_the_limit_comes_back(services):
    services.settings.values["detect_memory_mb"] = 1            # nothing fits in 1 MB, nor in 2
    services.memory.base = 1                                    # (a pass never gets less than serve's own)
    services.store.execute("set memory_limit = '1MB'")
    serve_limit = limit(services)
    job = jobs._guarded(services, "detect", lambda: jobs.detection(services))
    in_thread(job)
    assert "Out of Memory" in services.jobs["detect"]["error"]
    assert limit(services) == serve_limit and not services.memory.held     # not the 2 MB of the retry


def test_a_waiting_pass_gives_up_when_the_server_stops(services, monkeypatch):
    monkeypatch.setattr(jobs, "BACKLOG_WAIT", 0.05)
    services.backlog = True
    job = threading.Thread(target=lambda: jobs.detection(services))
    job.start()
    time.sleep(0.2)
    services.stopping.set()
    job.join(5)
    assert not job.is_alive() and not services.store.value("select count(*) from detect_runs")


def test_ingest_reads_a_backlog_in_slices_and_stops_between_two(services, tmp_path, monkeypatch):
    from tests.conftest import write
    line = '198.51.100.{a} - - [20/Nov/2024:10:00:00 +0000] "GET /v2/ HTTP/1.1" 401 {n} "-" "curl/8.5.0" "-"'
    log = write(tmp_path / "access.log", [line.format(a=n % 200, n=n) for n in range(30_000)])     # ~2.6 MB
    services.settings.values.update(sources=[str(log)], chunk_mb=1)
    monkeypatch.setattr(jobs, "INGEST_SLICE", 1 << 20)
    services.stopping.set()
    in_thread(lambda: jobs.ingest(services))
    first = services.store.value("select count(*) from events where file_id > 0")
    assert 0 < first < 30_000 and services.backlog                   # one slice, then it stopped
    services.stopping.clear()
    in_thread(lambda: jobs.ingest(services))
    assert services.store.value("select count(*) from events where file_id > 0") == 30_000 and not services.backlog

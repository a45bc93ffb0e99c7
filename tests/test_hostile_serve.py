"""One failed statement must never wedge serve (issue 19 §1): a unit of work that fails is
rolled back and the shared connection stays usable for the next ingest, publish and admin
change; a failed job says so in /healthz and is tried again; an error after which DuckDB
refuses the whole database makes `pullwarden serve` exit non-zero, so the service manager
restarts it."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import duckdb
import httpx
import pytest

from core.store import open_store
from enforcer import jobs
from enforcer.keys import create_key
from tests.enforcer_helpers import NOW, Enforcer, free_port

LINE = ('203.0.113.{n} - - [27/Nov/2026:11:{m:02d}:00 +0000] "GET /v2/docker.io/library/nginx/manifests/1.27 '
        'HTTP/1.1" 200 1234 "-" "docker/27.3.1"\n')


@pytest.fixture
def api(tmp_path):
    a = Enforcer(tmp_path)
    yield a
    a.stop()


def _ban(api, ip: str) -> httpx.Response:
    return httpx.post(api.url + "/v1/admin/bans", headers=api.headers("admin"), timeout=10,
                      json={"scope": "ip", "value": ip, "duration": "2h", "reason": "scanner"})


def test_a_failed_ingest_is_rolled_back_and_the_next_ingest_publish_and_ban_work(api, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("".join(LINE.format(n=n, m=n) for n in range(1, 21)))
    api.cfg.values["sources"] = [str(log)]
    # A real DuckDB error inside ingest's last unit of work (enrich_new, then the run's row):
    # the run log's sequence is behind its table (a row written by hand, a restored table), so
    # the run's insert breaks the primary key. Before the unit helper the connection was left
    # in "Current transaction is aborted" and every later statement failed.
    with api.services.lock:
        api.store.execute("""insert into ingest_runs (run_id, started_at, seconds, files, lines, events, rejects)
                             values (1, ?, 0, 0, 0, 0, 0), (2, ?, 0, 0, 0, 0, 0)""", [NOW, NOW])
    run = jobs._guarded(api.services, "ingest", lambda: jobs.ingest(api.services), every=10)
    run()
    health = httpx.get(api.url + "/healthz", timeout=10).json()
    job = health["jobs"]["ingest"]
    assert health["status"] == "degraded" and "ConstraintException" in job["error"]
    assert job["failures"] == 1 and job["failed_at"] and job["retry_at"] > job["failed_at"]
    # the shared connection works: an admin ban (a write and a publish), /v1/check, detection
    version = health["policy_version"]
    r = _ban(api, "198.51.100.9")
    assert r.status_code == 201, r.text
    assert r.json()["policy_version"] == version + 1
    check = httpx.get(api.url + "/v1/check?ip=198.51.100.9", headers=api.headers("proxy"), timeout=10).json()
    assert not check["allowed"]
    assert jobs.detection(api.services, lower=False) is not None
    # the next run (the retry) reads the file again from where the last committed chunk left it
    run()
    assert httpx.get(api.url + "/healthz", timeout=10).json()["jobs"]["ingest"]["failures"] == 2
    with api.services.lock:
        api.store.execute("delete from ingest_runs")
    run()
    health = httpx.get(api.url + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["jobs"]["ingest"]["error"] is None
    assert api.store.value("select count(*) from events") == 20           # each line once
    assert api.store.value("select count(*) from ingest_runs") == 1


def test_a_unit_rolls_back_whatever_raises_and_joins_an_outer_one(tmp_path):
    store = open_store(str(tmp_path / "db.duckdb"))
    store.execute("create table t (a integer primary key)")
    for failure in (lambda: store.execute("insert into t values (1), (1)"),    # DuckDB's own error
                    lambda: 1 / 0):                                             # anything else
        with pytest.raises((duckdb.ConstraintException, ZeroDivisionError)):
            with store.unit():
                store.execute("insert into t values (7)")
                failure()
        assert store.value("select count(*) from t") == 0       # rolled back, and the connection answers
    with pytest.raises(ZeroDivisionError):
        with store.unit():
            store.execute("insert into t values (1)")
            with store.unit():                                  # part of the outer one
                store.execute("insert into t values (2)")
            1 / 0
    assert store.value("select count(*) from t") == 0
    with store.unit():
        store.execute("insert into t values (3)")
    assert store.value("select count(*) from t") == 1
    store.close()


def _limited(size: int):
    def cap():      # the process's files cannot grow past `size`: a full disk for DuckDB's writes
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    return cap


def test_serve_exits_non_zero_when_duckdb_invalidates_the_database(tmp_path):
    db = tmp_path / "db.duckdb"
    store = open_store(str(db))
    key = create_key(store, "admin", "admin", NOW)
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    # a first start writes the first policy and checkpoints; then the file may not grow by a block
    for capped in (False, True):
        cap = _limited(db.stat().st_size + (32 << 10)) if capped else None
        proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--db", str(db),
                                 "--port", str(port)], cwd=tmp_path, env=env, preexec_fn=cap,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.time() < deadline, "serve did not start"
                time.sleep(0.1)
        if cap is None:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
    headers = {"X-Api-Key": key}
    stored = 0
    try:
        # admin bans fit in the WAL; the next checkpoint (the detection pass's, every pass
        # starts with one) cannot grow the file and DuckDB invalidates the database
        for n in range(1, 400):
            try:
                r = httpx.post(url + "/v1/admin/bans", headers=headers, timeout=10,
                               json={"scope": "ip", "value": f"198.51.100.{n % 250}", "duration": f"{n}h",
                                     "reason": "scanner " + "x" * 150})
            except httpx.TransportError:
                break
            if r.status_code != 201:
                break
            stored += 1
            if n % 50 == 0:
                httpx.post(url + "/v1/admin/detect", headers=headers, timeout=30)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert status == 3 and "invalidated the database" in err, (status, err)
    # a restart opens the file afresh (its WAL replayed): every ban answered 201 is there
    store = open_store(str(db))
    assert store.value("select count(*) from decisions") == stored > 0
    store.close()

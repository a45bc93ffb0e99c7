"""No out-of-memory at default settings (issue 19 §2): serve starts after a large change made
while it was stopped, the backtest answers, detection fits its memory on the first try, and
where a limit is still hit the API says 503 and what to change."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.settings import load
from core.store import open_store
from enforcer.jobs import configure_store
from enforcer.service import Services

NOW = datetime(2026, 11, 27, 12)


def _bans(store, first: int, n: int, until: datetime) -> None:
    store.execute("""
        insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
        select nextval('decision_seq'), 'ip', '10.' || (i // 65536) || '.' || ((i // 256) % 256) || '.' || (i % 256),
               'ban', 'repull-storm', 'rule', 'pulled the same blobs 412 times in 24h (38.2 GiB)', ?, ?
        from range(?, ?) t(i)""", [NOW, until, first, first + n])


def _serve_start(db: str, at: datetime) -> Services:
    """What `pullwarden serve` does before it answers: its store settings (defaults), then the
    first publish, which compares with what was published before it stopped."""
    cfg = load(None, {"db": db}, environ={})
    store = open_store(db)
    configure_store(store, cfg)
    return Services(store, cfg, clock=lambda: at)


# The sizes of the report, not lowered: 10,000 bans published, 90,000 added while
# serve was stopped; and 100,000 published that all expired meanwhile. Before the difference
# was stored in steps, both starts failed with "failed to allocate data of size 64.0 MiB".
@pytest.mark.parametrize("published, added, expired", [(10_000, 90_000, False), (100_000, 0, True)])
def test_serve_starts_after_a_large_change_while_it_was_stopped(tmp_path, published, added, expired):
    db = str(tmp_path / "db.duckdb")
    store = open_store(db)
    _bans(store, 0, published, NOW + timedelta(hours=1 if expired else 48))
    store.close()
    before = _serve_start(db, NOW)
    version = before.publisher.current.version
    assert len(before.publisher.current.content["bans"]) == published
    before.store.close()
    store = open_store(db)
    _bans(store, published, added, NOW + timedelta(hours=48))
    store.close()
    later = NOW + timedelta(hours=2)
    services = _serve_start(db, later)
    try:
        cur = services.publisher.current
        assert len(cur.content["bans"]) == (0 if expired else published + added)
        # a poller of the version before the stop still gets the whole change as one delta
        changes = services.publisher.changes(version)
        assert len(changes["upsert"]["bans"]) == added
        assert len(changes["remove"]["bans"]) == (published if expired else 0)
        # and after another restart (the steps are stored, not only kept in memory)
        services.store.close()
        again = _serve_start(db, later)
        assert again.publisher.current.version == cur.version
        assert len(again.publisher.changes(version)["upsert"]["bans"]) == added
        again.store.close()
    finally:
        try:
            services.store.close()
        except Exception:
            pass


# A day of a small mirror: CI storms beside light users, in several /24s, with a few user agents.
# The memory a detection pass or a backtest step needs is set by the feature queries' shape
# (each distinct count and join is an operator with its own buffers): at one thread it was
# 115 MB on the demo month (670,000 events) and 111-119 MB on 15 M events over 7 days, so a
# small data set needs what a large one does, and nothing here is lowered to make it fit.
def _day(store, start: datetime) -> None:
    from rules.rollup import roll_up
    from tests.detect_helpers import add_events, light, storm
    rows = []
    for n in range(12):
        rows += storm(f"198.51.{100 + n % 3}.{n + 1}", start=start, hours=24, per_hour=2 + n % 3,
                      ua=f"docker/2{n % 4}.0.7")
    for n in range(60):
        rows += light(f"203.0.{113 + n % 2}.{n + 1}", start=start, hour=n % 24)
    add_events(store, rows)
    roll_up(store)


def test_detection_fits_its_default_memory_on_the_first_try(tmp_path, caplog):
    """`pullwarden up` on the demo month logged "did not fit in detect_memory_mb = 96 MB" on its
    first pass. The demo mirror's last two days and today (the longest window the shipped rules
    judge is 48 h), at the demo's own traffic per day, nothing scaled down."""
    from enforcer import jobs
    from ingest.pipeline import Ingester
    from sample_logs.month import write_month
    db = str(tmp_path / "db.duckdb")
    write_month(tmp_path / "logs", NOW, days=2)
    store = open_store(db)
    Ingester(store, load(None, {"db": db}, environ={})).run([str(tmp_path / "logs")])
    store.close()
    services = _serve_start(db, NOW)
    try:
        with caplog.at_level("WARNING", logger="pullwarden.jobs"):
            result = jobs.detection(services, lower=False)
        assert result is not None and result.findings
        assert "did not fit" not in caplog.text
        assert services.store.value("select current_setting('memory_limit')").startswith("61")  # 64 MB again
    finally:
        services.store.close()


@pytest.fixture
def served(tmp_path):
    """serve's API over real HTTP with serve's store settings (defaults), on a day of traffic."""
    from enforcer.jobs import configure_store
    from tests.enforcer_helpers import Enforcer
    api = Enforcer(tmp_path)
    configure_store(api.store, api.cfg)
    with api.services.lock:
        _day(api.store, NOW - timedelta(hours=24))
    yield api
    api.stop()


def test_the_backtest_answers_at_default_settings(served):
    import httpx
    r = httpx.get(served.url + "/v1/stats/backtest", headers=served.headers("viewer"), timeout=120,
                  params={"start": (NOW - timedelta(hours=12)).isoformat(), "end": NOW.isoformat()})
    assert r.status_code == 200, r.text
    flagged = {v for rule in r.json()["rules"] for v in rule["flagged"]}
    assert "198.51.100.1" in flagged or any(v.startswith("198.51.") for v in flagged)
    assert served.store.value("select current_setting('memory_limit')").startswith("61")   # given back


def test_out_of_memory_is_a_503_naming_the_setting_and_the_server_goes_on(served):
    import httpx
    # The backtest then runs at serve's own limit, here made far too small. (At serve's default
    # 64 MB a two-hour backtest of this day fits since the feature queries compute only what the
    # rules read, so the limit itself is lowered: what is tested is the answer to running out.)
    served.cfg.values["detect_memory_mb"] = 1
    memory = served.services.memory
    base, memory.base = memory.base, 8
    try:
        r = httpx.get(served.url + "/v1/stats/backtest", headers=served.headers("viewer"), timeout=120,
                      params={"start": (NOW - timedelta(hours=12)).isoformat(), "end": NOW.isoformat()})
    finally:
        memory.base = base
    assert r.status_code == 503 and "detect_memory_mb" in r.json()["detail"], r.text
    r = httpx.post(served.url + "/v1/admin/bans", headers=served.headers("admin"), timeout=10,
                   json={"scope": "ip", "value": "192.0.2.77", "duration": "2h", "reason": "scanner"})
    assert r.status_code == 201, r.text
    assert httpx.get(served.url + "/healthz", timeout=10).json()["status"] == "ok"


def test_a_disk_full_when_the_file_was_opened_is_said_and_the_free_space_read_again(tmp_path):
    from core.store import DiskFull
    store = open_store(str(tmp_path / "db.duckdb"))
    store.execute("set memory_limit = '30MB'; set threads = 1")
    # what DuckDB fixes when it opens the file on a full disk (90% of the free space: nothing)
    store.execute("set max_temp_directory_size = '1KB'")
    big = "select count(*) from (select distinct md5(i::varchar) from range(2000000) t(i))"
    with pytest.raises(DiskFull, match=r"disk full: .* in " + str(tmp_path / "db.duckdb.tmp")):
        store.execute(big)
    assert store.execute(big) == [(2_000_000,)]          # the room freed since is used
    store.close()

"""Retention: old findings, ended decisions and the run log go; what is in force, the events
and the audit log stay; the cutoff is keep_days before the run's one `now` (the wall clock, or
a replay's pinned time)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from click.testing import CliRunner

from cli.main import cli
from core.retention import prune
from core.store import open_store
from tests.detect_helpers import add_events, ev

NEWEST = datetime(2024, 11, 20, 12)          # logs from the past: the wall clock is two years on
WALL = datetime(2026, 11, 27, 12)


def decision(store, value, created, until, revoked=None):
    store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until,
                     revoked_at) values (nextval('decision_seq'), 'ip', ?, 'ban', 'r', 'rule', 'x', ?, ?, ?)""",
                  [value, created, until, revoked])


def test_prune_before_the_replay_time_then_the_wall_clock(tmp_path):
    store = open_store(str(tmp_path / "db.duckdb"))
    add_events(store, [ev(NEWEST, "192.0.2.1"), ev(NEWEST - timedelta(days=200), "192.0.2.2")])
    for at in (NEWEST - timedelta(days=100), NEWEST - timedelta(days=5)):
        store.execute("insert into findings (now, rule, entity_kind, entity, window_name, action, simulated, reason, evidence) values (?, 'r', 'address', '192.0.2.1', '24h', 'ban', false, 'x', null)",
                      [at])
    decision(store, "198.51.100.1", NEWEST - timedelta(days=120), NEWEST - timedelta(days=100))      # ended long ago
    decision(store, "198.51.100.2", NEWEST - timedelta(days=120), NEWEST + timedelta(days=1),
             revoked=NEWEST - timedelta(days=95))                                                    # revoked long ago
    decision(store, "198.51.100.3", NEWEST - timedelta(days=120), NEWEST + timedelta(days=1))       # in force
    decision(store, "198.51.100.4", NEWEST - timedelta(days=20), NEWEST - timedelta(days=5))        # ended lately
    for at in (WALL - timedelta(days=100), WALL - timedelta(hours=1)):
        store.execute("insert into ingest_runs (started_at, seconds, files, lines, events, rejects) "
                      "values (?, 1, 1, 1, 1, 0)", [at])
    store.execute("insert into audit values (?, 'admin', 'add ban', null, null, 'x')", [WALL - timedelta(days=900)])
    # a replay of the 2024 logs: what detection made then is judged by the replay's time
    done = prune(store, 90, NEWEST)
    assert done == {"findings": 1, "decisions": 2, "ingest_runs": 0, "detect_runs": 0}
    assert sorted(v for (v,) in store.execute("select value from decisions")) == ["198.51.100.3", "198.51.100.4"]
    assert store.value("select count(*) from findings") == 1 and store.value("select count(*) from events") == 2
    assert prune(store, 1, NEWEST)["decisions"] == 0          # never under 8 days: recidive looks back 7
    # live, two years on: all of it is old news, and the run log goes by the same clock
    assert prune(store, 90, WALL) == {"findings": 1, "decisions": 2, "ingest_runs": 1, "detect_runs": 0}
    assert store.value("select count(*) from audit") == 1 and store.value("select count(*) from events") == 2
    store.close()


def test_prune_command(tmp_path):
    db = str(tmp_path / "db.duckdb")
    store = open_store(db)
    add_events(store, [ev(NEWEST, "192.0.2.1")])
    decision(store, "198.51.100.1", NEWEST - timedelta(days=120), NEWEST - timedelta(days=100))
    store.close()
    res = CliRunner().invoke(cli, ["prune", "--db", db, "--json"], env={"PULLWARDEN_KEEP_DAYS": "30"})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["decisions"] == 1

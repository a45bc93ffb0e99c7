"""Backup while serve runs and ingests, restore to a new path: the copy is the database as of one
moment (every event up to its newest seq, none after), with its decisions, keys and audit log,
and a restored database goes on ingesting and rolling up where the copy stopped."""
from __future__ import annotations

import json
import threading
import time

import httpx
from click.testing import CliRunner

from cli.main import cli
from core.store import open_store
from rules.rollup import roll_up
from tests.enforcer_helpers import serving

LINE = ('198.51.100.{a} - - [20/Nov/2024:10:{m:02d}:{s:02d} +0000] "GET /v2/library/nginx/manifests/{n} HTTP/1.1" '
        '200 {n} "-" "docker/24.0.7 go/go1.20.10" "-"\n')


def invoke(*args, env=None):
    res = CliRunner().invoke(cli, list(args), env=env or {})
    assert res.exit_code == 0, res.output
    return res.stdout


def test_backup_while_serve_ingests_then_restore(workdir):
    db = workdir / "live.duckdb"
    (workdir / "logs").mkdir()
    log = workdir / "logs" / "access.log"
    log.write_text("".join(LINE.format(a=n % 50, m=n // 60 % 60, s=n % 60, n=n) for n in range(2000)))
    (workdir / "pullwarden.toml").write_text(f'db = "{db}"\nsources = ["{workdir}/logs/access.log*"]\n'
                                              'ingest_interval = 0.3\n')
    key = invoke("keys", "create", "--role", "admin", "--name", "ops").strip()
    env = {"PULLWARDEN_API_KEY": key}
    written = [2000]
    stop = threading.Event()

    def grow():                                    # the proxy keeps logging while the backup runs
        with log.open("a") as f:
            while not stop.is_set():
                n = written[0]
                f.write("".join(LINE.format(a=k % 50, m=k // 60 % 60, s=k % 60, n=k) for k in range(n, n + 200)))
                f.flush()
                written[0] = n + 200
                time.sleep(0.05)

    with serving(workdir) as url:
        deadline = time.time() + 60
        while json.loads(invoke("stats", "--json", env=env))["requests"] < 2000:
            assert time.time() < deadline, "serve did not ingest the log"
            time.sleep(0.3)
        invoke("ban", "ip", "203.0.113.7", "--duration", "24h", "--reason", "scraper", env=env)
        invoke("assign", "ip", "198.51.100.3", "--tier", "throttled", "--reason", "heavy CI", env=env)
        writer = threading.Thread(target=grow)
        writer.start()
        time.sleep(1.0)
        try:
            done = json.loads(invoke("backup", str(workdir / "copy.duckdb"), "--json", env=env))
            time.sleep(1.0)
        finally:
            stop.set()
            writer.join()
        # never over an existing file, and only with an admin key
        res = CliRunner().invoke(cli, ["backup", str(workdir / "copy.duckdb")], env=env)
        assert res.exit_code == 2 and "already exists" in res.output
        viewer = invoke("keys", "create", "--role", "viewer", "--name", "v", env=env).strip()
        assert httpx.post(url + "/v1/admin/backup", json={"dest": str(workdir / "x.duckdb")},
                          headers={"X-Api-Key": viewer}).status_code == 403
        deadline = time.time() + 60
        while json.loads(invoke("stats", "--json", env=env))["requests"] < written[0]:
            assert time.time() < deadline, "serve did not catch up"
            time.sleep(0.3)
    assert done["schema_version"] == 12 and done["bytes"] > 0
    assert 2000 <= done["rows"]["events"] < written[0]        # taken while lines were still coming in

    res = CliRunner().invoke(cli, ["restore", str(workdir / "copy.duckdb"), "--db", str(db)])
    assert res.exit_code == 2 and "--force" in res.output      # never over the live database by accident
    out = json.loads(invoke("restore", str(workdir / "copy.duckdb"), "--db", str(workdir / "new.duckdb"), "--json"))
    assert out["rows"] == done["rows"]

    live, new = open_store(str(db)), open_store(str(workdir / "new.duckdb"))
    top = new.value("select max(seq) from events")
    # one moment: every event up to the copy's newest, none after it, the same rows
    assert new.value("select count(*) from events") == live.value("select count(*) from events where seq <= ?", [top])
    cols = "seq, ts, client_ip, bytes, uri, kind, reference"
    assert (new.execute(f"select {cols} from events order by seq")
            == live.execute(f"select {cols} from events where seq <= ? order by seq", [top]))
    decisions = "select id, scope, value, effect, tier, reason, until, revoked_at from decisions order by id"
    assert new.execute(decisions) == live.execute(decisions) and len(new.execute(decisions)) == 2
    assert new.execute("select name, role, key_hash from api_keys order by id") == \
        live.execute("select name, role, key_hash from api_keys where name <> 'v' order by id")
    assert new.value("select count(*) from audit where action = 'add ban'") == 1
    live.close()
    # the restored file goes on: new events after the copy's, rolled up exactly once
    roll_up(new)
    before = new.value("select sum(requests) from facts_hourly")
    new.execute("""insert into events (ts, client_ip, peer_ip, kind, file_id)
                   values ('2024-11-20 11:00:00', '192.0.2.1', '192.0.2.1', 'ping', 99)""")
    assert new.value("select seq from events where file_id = 99") > top
    assert roll_up(new) == 1 and new.value("select sum(requests) from facts_hourly") == before + 1
    new.close()

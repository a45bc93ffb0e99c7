"""Backup while serve runs and ingests, restore to a new path: the copy is the database as of one
moment (every event up to its newest seq, none after), with its decisions, keys and audit log,
and a restored database goes on ingesting and rolling up where the copy stopped."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
from click.testing import CliRunner

from cli.main import cli
from core.store import VERSION, open_store
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
    assert done["schema_version"] == VERSION and done["bytes"] > 0 and done["verified"]      # read back by the server
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


# --- a damaged backup (issue 19 §8) ----------------------------------------------------------

HEADER = 3 * 4096           # DuckDB's file header and its two database headers, before block 0
BLOCK = 256 * 1024          # DuckDB's block size (the default, which pullwarden does not change)


def _made(workdir):
    """A database with some thousands of events, and its backup (made on the file)."""
    db = workdir / "live.duckdb"
    log = workdir / "access.log"
    log.write_text("".join(LINE.format(a=n % 50, m=n // 60 % 60, s=n % 60, n=n) for n in range(20_000)))
    invoke("ingest", str(log), "--db", str(db))
    invoke("ban", "ip", "203.0.113.7", "--duration", "24h", "--reason", "scraper", "--db", str(db))
    done = json.loads(invoke("backup", str(workdir / "copy.duckdb"), "--db", str(db), "--json"))
    assert done["verified"] is True
    return db, workdir / "copy.duckdb"


def _full_scan_fails(path) -> bool:
    """The oracle, independent of pullwarden: does reading every table whole fail?"""
    import duckdb
    con = duckdb.connect(str(path), read_only=True)
    try:
        for (t,) in con.execute("select table_name from duckdb_tables() where schema_name = 'main'").fetchall():
            con.execute(f'select * from "{t}"').fetchall()
    except duckdb.Error:
        return True
    finally:
        con.close()
    return False


def _data_offsets(path) -> list[int]:
    """Offsets inside the persistent blocks that hold the events' column data (where the issue's
    flipped byte landed), from DuckDB's own storage map."""
    import duckdb
    con = duckdb.connect(str(path), read_only=True)
    blocks = sorted({b for (b,) in con.execute("""select block_id from pragma_storage_info('events')
                                                   where persistent and block_id >= 0""").fetchall()})
    con.close()
    return [HEADER + b * BLOCK + 8 + k for b in blocks for k in (100, 5000, 60_000)]


def test_a_backup_with_one_flipped_byte_is_refused_and_the_database_is_untouched(workdir):
    db, good = _made(workdir)
    original = db.read_bytes()
    data = good.read_bytes()
    bad = workdir / "flipped.duckdb"
    refused = 0
    for offset in _data_offsets(good)[:6]:
        flipped = bytearray(data)
        flipped[offset] ^= 0x5A
        bad.write_bytes(flipped)
        if not _full_scan_fails(bad):         # a byte DuckDB does not check (slack in a block): next
            continue
        res = CliRunner().invoke(cli, ["restore", str(bad), "--db", str(db), "--force"])
        assert res.exit_code == 2, res.output
        assert "not restored, nothing was replaced" in res.output and "damaged" in res.output
        assert "checksum" in res.output and "Traceback" not in res.output
        assert db.read_bytes() == original                  # untouched, nothing beside it
        assert not [p.name for p in workdir.iterdir() if ".restoring" in p.name or ".before-restore" in p.name]
        # a command on a damaged database is one line, not a traceback
        out = CliRunner().invoke(cli, ["export", "parquet", "--since", "2024-11-20", str(workdir / "lake"),
                                       "--db", str(bad)])
        assert out.exit_code == 2 and out.exception is None or isinstance(out.exception, SystemExit), out.output
        assert "pullwarden: error:" in out.output and "Traceback" not in out.output
        if not refused:                     # backup and report of a damaged database: the same
            out = CliRunner().invoke(cli, ["backup", str(workdir / "of-bad.duckdb"), "--db", str(bad)])
            assert out.exit_code == 2 and "cannot be copied" in out.output, out.output
            assert not [p.name for p in workdir.iterdir() if p.name.startswith("of-bad")]
            out = CliRunner().invoke(cli, ["report", "monthly", "--month", "2024-11", "--out", str(workdir / "r"),
                                           "--db", str(bad)])
            assert out.exit_code == 2 and "the database:" in out.output, out.output
        refused += 1
    assert refused >= 3, "no flipped byte was in checked table data: the offsets are wrong"
    # the good backup itself still restores
    restored = json.loads(invoke("restore", str(good), "--db", str(workdir / "new.duckdb"), "--json"))
    assert restored["rows"]["events"] == 20_000


def test_a_backup_whose_rows_differ_from_those_written_is_refused(workdir):
    """Rows read against the rows written when the backup was made (its manifest)."""
    import duckdb
    _, good = _made(workdir)
    con = duckdb.connect(str(good))
    con.execute("delete from decisions")          # a file that lost rows, every block still whole
    con.close()
    res = CliRunner().invoke(cli, ["restore", str(good), "--db", str(workdir / "new.duckdb")])
    assert res.exit_code == 2 and "rows read differ from the rows written, in decisions (0 of 1)" in res.output
    assert not (workdir / "new.duckdb").exists()


def test_a_restored_database_is_not_a_backup(workdir):
    """The manifest is the backup's: a restored database has none, and its own backup gets a new one."""
    _, good = _made(workdir)
    invoke("restore", str(good), "--db", str(workdir / "new.duckdb"))
    s = open_store(str(workdir / "new.duckdb"))
    assert s.value("select count(*) from duckdb_tables() where table_name = 'pw_backup_manifest'") == 0
    s.close()
    again = json.loads(invoke("backup", str(workdir / "again.duckdb"), "--db", str(workdir / "new.duckdb"), "--json"))
    assert again["rows"]["events"] == 20_000 and again["verified"]


def test_every_command_on_a_damaged_database_is_one_line(workdir):
    """Through the console entry point (main), commands that read a damaged database say so in
    one line and exit 2: a checksum failure is a plain duckdb.Error, not an IOException."""
    _, good = _made(workdir)
    data = good.read_bytes()
    bad = workdir / "flipped.duckdb"
    for offset in _data_offsets(good):
        flipped = bytearray(data)
        flipped[offset] ^= 0x5A
        bad.write_bytes(flipped)
        if _full_scan_fails(bad):
            break
    else:
        raise AssertionError("no flipped byte was in checked table data")
    for args in (["stats"], ["detect", "--now", "2024-11-21T00:00"]):
        res = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *args, "--db", str(bad)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (args, res.stdout, res.stderr[-2000:])
        assert "the database:" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]

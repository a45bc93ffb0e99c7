"""`pullwarden export parquet`: events out as Hive-partitioned Parquet, read back by DuckDB over
many files to the same rows, and a re-export replaces a day instead of adding to it."""
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import httpx
from click.testing import CliRunner

from cli.main import cli
from tests.enforcer_helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("ts, client_ip, peer_ip, forwarded_for, remote_user, method, status, bytes, request_time, user_agent, "
           "host, cache_status, registry, repository, kind, reference, digest, uri, location")


def _genlogs():
    spec = importlib.util.spec_from_file_location("genlogs", ROOT / "bench" / "genlogs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_log(path: Path, lines: int, start: str, seed: int) -> None:
    """bench/genlogs.py's seeded mirror traffic (many registries, the /v2/ ping without one), two
    days from `start`."""
    g = _genlogs()
    rng = random.Random(seed)
    path.write_text("".join(g.render("main", r) + "\n"
                            for r in g.requests(rng, lines, datetime.fromisoformat(start))))


def invoke(*args) -> dict:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output + res.stderr
    return json.loads(res.stdout)


def per_day_and_registry(con, source: str) -> list[tuple]:
    return con.execute(f"""select day, registry, count(*), sum(bytes) from ({source})
                           group by all order by all""").fetchall()


def parquet(dest: Path) -> str:
    return f"select * from read_parquet('{dest}/**/*.parquet', hive_partitioning = true)"


def test_export_reads_back_to_the_same_rows_and_a_reexport_replaces(workdir):
    logs = workdir / "logs"
    logs.mkdir()
    write_log(logs / "a.log", 6000, "2024-11-20T00:00:00+00:00", 1)
    write_log(logs / "b.log", 6000, "2024-11-23T00:00:00+00:00", 2)
    invoke("ingest", str(logs), "--json")
    # registries as folder names: a port, and characters Hive escapes
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"))
    con.execute("""insert into events (ts, client_ip, peer_ip, kind, registry, bytes, file_id) values
                   ('2024-11-21 10:00', '192.0.2.1', '192.0.2.1', 'blob', 'reg.example.com:5000', 7, 0),
                   ('2024-11-21 11:00', '192.0.2.1', '192.0.2.1', 'blob', 'we#ird/../reg=%', 9, 0)""")
    con.close()
    dest = workdir / "lake"

    out = invoke("export", "parquet", "--since", "2024-11-19", str(dest), "--json")
    # the days from --since through the newest event's day, the empty ones included
    assert [d["day"] for d in out["days"]] == [f"2024-11-{d}" for d in range(19, 26)]
    assert out["days"][0]["rows"] == 0 and not (dest / "day=2024-11-19").exists()

    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"), read_only=True)
    stored = per_day_and_registry(con, "select ts::date as day, registry, bytes from events")
    con.close()
    read = duckdb.connect()
    back = per_day_and_registry(read, parquet(dest))
    assert back == stored and len({r[0] for r in back}) >= 4 and len({r[1] for r in back}) >= 5
    assert None in {r[1] for r in back}           # the /v2/ ping has no registry
    assert out["rows"] == sum(r[2] for r in stored) == 12002
    assert {"reg.example.com:5000", "we#ird/../reg=%"} <= {r[1] for r in back}
    assert out["bytes"] == sum(r[3] for r in stored)

    # every column as stored, row for row (a multiset: nothing lost, nothing twice); peer_ip, null
    # in the store when it is the client, is written out whole
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"), read_only=True)
    stored_columns = COLUMNS.replace("peer_ip", "coalesce(peer_ip, client_ip) as peer_ip")
    con.execute(f"copy (select {stored_columns} from events) to '{workdir}/events.parquet' (format parquet)")
    con.close()
    for a, b in ((f"select {COLUMNS} from '{workdir}/events.parquet'", f"select {COLUMNS} from ({parquet(dest)})"),
                 (f"select {COLUMNS} from ({parquet(dest)})", f"select {COLUMNS} from '{workdir}/events.parquet'")):
        assert read.execute(f"select count(*) from ({a} except all {b})").fetchone()[0] == 0

    # plain types only: what ClickHouse, Trino and Spark read without DuckDB's extensions
    types = dict(read.execute(f"select column_name, column_type from (describe {parquet(dest)})").fetchall())
    assert types["ts"] == "TIMESTAMP" and types["status"] == "INTEGER" and types["bytes"] == "BIGINT"
    assert types["day"] == "DATE" and types["registry"] == "VARCHAR"
    assert set(types.values()) <= {"TIMESTAMP", "VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "DATE"}, types
    physical = read.execute(f"""select distinct type, logical_type from parquet_schema('{dest}/**/*.parquet')
                                where type is not null""").fetchall()
    assert {t for t, _ in physical} <= {"INT64", "INT32", "DOUBLE", "BYTE_ARRAY"}, physical
    # the partition columns are in the folder names only
    names = {r[0] for r in read.execute(f"select name from parquet_schema('{dest}/**/*.parquet')").fetchall()}
    assert "day" not in names and "registry" not in names
    files = sorted(p.relative_to(dest) for p in dest.rglob("*.parquet"))
    assert all(str(f).startswith("day=2024-11-2") and "/registry=" in str(f) for f in files)

    # again: the same files, the same rows (replaced, not added)
    again = invoke("export", "parquet", "--since", "2024-11-19", str(dest), "--json")
    assert again["rows"] == out["rows"] and sorted(p.relative_to(dest) for p in dest.rglob("*.parquet")) == files
    assert per_day_and_registry(read, parquet(dest)) == stored
    assert not [p for p in workdir.iterdir() if p.name.startswith(".lake.")]     # no staging left

    # the last day grows (a day exported while it was under way): exporting it again gives the
    # whole day once
    write_log(logs / "c.log", 2000, "2024-11-24T12:00:00+00:00", 3)
    invoke("ingest", str(logs), "--json")
    one = invoke("export", "parquet", "--since", "2024-11-24", "--until", "2024-11-25", str(dest), "--json")
    assert [d["day"] for d in one["days"]] == ["2024-11-24"]
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"), read_only=True)
    stored = per_day_and_registry(con, "select ts::date as day, registry, bytes from events where ts < '2024-11-25'")
    con.close()
    assert per_day_and_registry(read, parquet(dest) + " where day < '2024-11-25'") == stored

    # retention deletes raw events at a time of day: the days it cut into, exported again, keep
    # their whole export (the same rows); a day past the cut is still replaced
    whole = per_day_and_registry(read, parquet(dest))
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"))
    con.execute("delete from events where ts < '2024-11-21 12:00'")
    con.close()
    pruned = invoke("export", "parquet", "--since", "2024-11-20", "--until", "2024-11-23", str(dest), "--json")
    assert [bool(d.get("kept")) for d in pruned["days"]] == [True, True, False]
    assert per_day_and_registry(read, parquet(dest)) == whole
    res = CliRunner().invoke(cli, ["export", "parquet", "--since", "2024-11-20", "--until", "2024-11-21", str(dest)])
    assert "2024-11-20: kept as exported before" in res.stdout


def test_export_through_the_running_server(workdir):
    """serve holds the file: the command asks it day by day (an admin key) and the server writes."""
    logs = workdir / "logs"
    logs.mkdir()
    write_log(logs / "a.log", 3000, "2024-11-20T00:00:00+00:00", 4)
    invoke("ingest", str(logs), "--json")
    admin = invoke("keys", "create", "--role", "admin", "--name", "ops", "--json")["key"]
    viewer = invoke("keys", "create", "--role", "viewer", "--name", "look", "--json")["key"]
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"), read_only=True)
    stored = per_day_and_registry(con, "select ts::date as day, registry, bytes from events")
    con.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port)],
                            cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.2)
        dest = workdir / "lake"
        run = [sys.executable, "-c", "from cli.main import main; main()", "export", "parquet", "--since",
               "2024-11-20", str(dest), "--json"]
        refused = subprocess.run(run, cwd=workdir, env={**env, "PULLWARDEN_API_KEY": viewer}, capture_output=True,
                                 text=True)
        assert refused.returncode == 2 and "403" in refused.stderr, (refused.stdout, refused.stderr, proc.poll())
        done = subprocess.run(run, cwd=workdir, env={**env, "PULLWARDEN_API_KEY": admin}, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert [d["day"] for d in out["days"]] == ["2024-11-20", "2024-11-21", "2024-11-22"]
        assert per_day_and_registry(duckdb.connect(), parquet(dest)) == stored
        audit = httpx.get(f"http://127.0.0.1:{port}/v1/admin/audit", headers={"X-Api-Key": admin}).json()
        assert [a["target"] for a in audit if a["action"] == "export parquet"] == [str(dest)] * 3
    finally:
        proc.terminate()
        proc.wait(30)

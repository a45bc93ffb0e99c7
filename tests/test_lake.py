"""Reports over several nodes' Parquet exports (`--parquet DIR`, reports/lake.py): the figures of
one database that ingested every node's logs, and the same totals computed by ClickHouse (chdb)
over the same files."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.test_export_parquet import write_log

MONTH, NOW = "2024-11", "2024-12-02T00:00:00"
ROOT = Path(__file__).resolve().parents[1]


def run(*args, ok: bool = True):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + res.stderr
    return res


def asn_db(path: Path) -> str:
    """A tiny IPinfo-Lite-style database (AS number, name and country in one record), so that
    the reports' AS and country breakdowns have something to tell apart."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet
    w = MMDBWriter(ip_version=6, database_type="ipinfo_lite", ipv4_compatible=True)
    for net, asn, cc in (("0.0.0.0/1", "AS64500", "DE"), ("128.0.0.0/1", "AS64501", "JP"),
                         ("2001:db8::/32", "AS64502", "BR")):
        w.insert_network(IPSet([net]), {"asn": asn, "as_name": f"NET-{asn}", "country_code": cc})
    w.to_db_file(str(path))
    return str(path)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Two nodes' logs over November (and a day each side of it), ingested once into one
    database and once into a database per node, each node's exported to lake/<node>/."""
    root = tmp_path_factory.mktemp("lake")
    geo = asn_db(root / "asn.mmdb")
    logs = {"node-a": root / "node-a", "node-b": root / "node-b"}
    for folder in logs.values():
        folder.mkdir()
    write_log(logs["node-a"] / "mirror.log", 3000, "2024-11-20T00:00:00+00:00", 11)
    write_log(logs["node-a"] / "october.log", 500, "2024-10-30T00:00:00+00:00", 12)
    write_log(logs["node-b"] / "mirror.log", 3000, "2024-11-21T06:00:00+00:00", 13)
    write_log(logs["node-b"] / "december.log", 300, "2024-11-30T20:00:00+00:00", 14)
    # the same clients on both nodes: unique addresses are counted across nodes, not per node
    a = (logs["node-a"] / "mirror.log").read_text().splitlines(keepends=True)
    # and blobs handed to object storage (307: the redirect's bytes are not the blob's, they do
    # not count as served), a conditional GET (304) and a range GET (206), which do
    blobs = [line for line in a[1400:] if "/blobs/sha256:" in line and '" 200 ' in line]
    assert len(blobs) > 300
    with open(logs["node-b"] / "mirror.log", "a") as f:
        f.writelines(a[1000:1400])
        for status, lines in (("307", blobs[:200]), ("304", blobs[200:250]), ("206", blobs[250:300])):
            f.writelines(line.replace('" 200 ', f'" {status} ', 1) for line in lines)
    one = root / "one.duckdb"
    run("ingest", logs["node-a"], logs["node-b"], "--db", one, "--asn-db", geo, "--json")
    lake = root / "lake"
    for node, folder in logs.items():
        db = root / f"{node}.duckdb"
        run("ingest", folder, "--db", db, "--asn-db", geo, "--json")
        run("export", "parquet", "--since", "2024-10-01", lake / node, "--db", db, "--json")
    return root, one, lake


def monthly(root: Path, *source) -> dict:
    out = root / f"out-{len(list(root.iterdir()))}"
    res = run("report", "monthly", "--month", MONTH, "--now", NOW, "--out", out, "--json", *source)
    return json.loads(res.stdout)


def test_the_monthly_report_over_the_nodes_parquet_is_the_one_databases(nodes):
    root, one, lake = nodes
    assert sorted(p.name for p in lake.iterdir()) == ["node-a", "node-b"]
    whole = monthly(root, "--db", one)
    over_parquet = monthly(root, "--parquet", lake)
    assert over_parquet == whole                  # every figure, and so the inputs' sha256
    assert whole["requests"] > 6000 and whole["total_bytes"] > 0
    assert len(whole["breakdowns"]["registry"]) >= 5 and len(whole["breakdowns"]["asn"]) == 3
    assert whole["previous_month"]["total_bytes"] > 0          # October, read from its folders too
    # the same report from one node's files alone is another (the check above can fail)
    assert monthly(root, "--parquet", lake / "node-a")["requests"] < whole["requests"]


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/Los_Angeles"])
def test_the_days_read_for_a_month_follow_report_timezone(nodes, monkeypatch, zone):
    """A month in report_timezone begins and ends inside UTC days: the day folders loaded are
    those its first and last local instants fall in."""
    root, one, lake = nodes
    monkeypatch.setenv("PULLWARDEN_REPORT_TIMEZONE", zone)
    whole = monthly(root, "--db", one)
    assert whole["timezone"] == zone and monthly(root, "--parquet", lake) == whole


def test_stats_over_the_nodes_parquet_is_the_one_databases(nodes, tmp_path, monkeypatch):
    root, one, lake = nodes
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))     # where the loaded store is made
    for span in ([], ["--from", "2024-11-21", "--to", "2024-11-23"]):
        whole = json.loads(run("stats", "--db", one, "--json", *span).stdout)
        assert json.loads(run("stats", "--parquet", lake, "--json", *span).stdout) == whole
    assert [d["day"] for d in whole["days"]] == ["2024-11-21", "2024-11-22"]
    assert list(tmp_path.iterdir()) == []                       # and removed once read


def docs_sql(name: str) -> list[str]:
    """The statements of the SQL block docs/scale-out.md marks `tests/test_lake.py: NAME`, for
    this test's month."""
    text = (ROOT / "docs" / "scale-out.md").read_text()
    block = text.split(f"<!-- tests/test_lake.py: {name} -->\n```sql\n", 1)[1].split("```", 1)[0]
    block = block.replace("2026-11-01", "2024-11-01").replace("2026-12-01", "2024-12-01")
    return [s.strip() for s in block.split(";") if s.strip()]


@pytest.fixture(scope="module")
def clickhouse(nodes, tmp_path_factory):
    """docs/scale-out.md's table, loaded by its INSERT from every node's files, in ClickHouse's
    own engine (chdb): a function that runs one statement and gives its rows."""
    pytest.importorskip("chdb", reason="chdb (ClickHouse in-process) is not installed")
    from chdb import session
    root, one, lake = nodes
    s = session.Session(str(tmp_path_factory.mktemp("clickhouse")))
    for sql in docs_sql("table") + [q.replace("/srv/lake", str(lake)) for q in docs_sql("load")]:
        s.query(sql)

    def query(sql: str) -> list[list]:
        return json.loads(str(s.query(sql, "JSONCompact")))["data"]
    yield query
    s.close()


def test_clickhouse_over_the_same_files_gives_the_same_totals(nodes, clickhouse):
    root, one, lake = nodes
    per_registry, per_day, top, clients, images, entity = docs_sql("queries")
    stats = json.loads(run("stats", "--db", one, "--json", "--from", "2024-11-01", "--to", "2024-12-01").stdout)
    mine = [[d["day"], r["registry"], r["requests"], r["bytes"], r["unique_ips"]]
            for d in stats["days"] for r in d["registries"]]
    # JSONCompact quotes 64-bit integers: compared as numbers, to the byte
    assert [[d, r, int(n), int(b), int(a)] for d, r, n, b, a in clickhouse(per_registry)] == mine
    assert len(mine) > 20 and any(r[1] is None for r in mine)
    assert [[d, int(n), int(b), int(a)] for d, n, b, a in clickhouse(per_day)] == [
        [d["day"], d["requests"], d["bytes"], d["unique_ips"]] for d in stats["days"]]

    report = monthly(root, "--db", one)
    assert [[ip, int(b), int(n)] for ip, b, n in clickhouse(top)] == [
        [c["address"], c["bytes"], c["requests"]] for c in report["top_consumers"]]
    assert [[int(n)] for n, in clickhouse(clients)] == [[report["addresses"]]]
    by_image = {f"{r or '(none)'}/{i or '(none)'}": [int(n), int(b), int(a)]
                for r, i, n, b, a in clickhouse(images)}
    assert [by_image[row["key"]] for row in report["breakdowns"]["image"]] == [
        [row["requests"], row["bytes"], row["addresses"]] for row in report["breakdowns"]["image"]]
    first = report["top_consumers"][0]
    hours = clickhouse(entity.replace("203.0.113.7", first["address"]))
    assert sum(int(b) for h, _, b in hours if h < "2024-12-01") == first["bytes"]


def test_a_bad_file_in_the_folder_is_named(nodes, tmp_path):
    root, one, lake = nodes
    good = next(iter(sorted((lake / "node-a").rglob("events_0.parquet"))))
    day, registry = good.parent.parent.name, good.parent.name

    def refused(place: str, content, *words: str) -> None:
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(lake, folder)
        target = folder / place
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, target)
        else:
            target.write_bytes(content)
        for command in (["stats"], ["report", "monthly", "--month", MONTH, "--now", NOW, "--out", tmp_path]):
            res = run(*command, "--parquet", folder, ok=False)
            assert res.exit_code == 2 and str(target) in res.stderr, res.output + res.stderr
            assert all(w in res.stderr for w in words), res.stderr
            assert "Traceback" not in res.output

    refused(f"node-c/{day}/{registry}/part-0.parquet", good, "not a file of `pullwarden export parquet`")
    refused(f"node-c/{day}/events_0.parquet", good, "not a file of")
    refused(f"node-c/{day}/{registry}/events_0.parquet", b"PAR1 not really", "not a readable Parquet file")
    other = tmp_path / "other.parquet"
    duckdb.connect().execute(f"copy (select 1 as ts, 'x' as client_ip) to '{other}' (format parquet)")
    refused(f"node-c/{day}/{registry}/events_0.parquet", other, "not the columns", "ts TIMESTAMP")
    refused(f"node-c/day=2024-11-05/{registry}/events_0.parquet", good, "outside day=2024-11-05")
    refused(f"node-c/{day}/registry=elsewhere.example/events_0.parquet", good, "registry=elsewhere.example")
    refused(f"node-c/day=2024-13-40/{registry}/events_0.parquet", good, "not a day")
    # rsync's temporary files are passed over
    hidden = tmp_path / "hidden"
    shutil.copytree(lake, hidden)
    (hidden / "node-a" / day / registry / ".events_1.parquet.Xa81").write_bytes(b"half")
    assert run("stats", "--parquet", hidden, "--json").exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("stats", "--parquet", empty, ok=False)
    assert res.exit_code == 2 and "no Parquet export in it" in res.stderr

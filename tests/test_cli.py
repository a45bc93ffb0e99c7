"""The command line: output, --json, and one-line errors that leave nothing half-written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
from click.testing import CliRunner

from cli.main import cli
from tests.conftest import write

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
LINE = '198.51.100.{n} - - [20/Nov/2024:23:59:5{n} +0000] "GET /v2/docker.io/library/nginx/blobs/sha256:ab HTTP/1.1" 200 {size} "-" "containerd/v1.7.22" "-"'


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_ingest_and_stats_json(workdir):
    write(workdir / "logs" / "access.log", [LINE.format(n=1, size=1 << 40), LINE.format(n=2, size=1 << 39),
                                             LINE.format(n=2, size=0).replace("20/Nov/2024:23", "21/Nov/2024:00")])
    res = invoke("ingest", "logs", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["files"], out["lines"], out["events"], out["rejected"]) == (1, 3, 3, 0)
    assert out["per_file"][0]["format"] == "main"
    assert Path("data/pullwarden.duckdb").exists()                 # the default database

    res = invoke("stats", "--json")
    stats = json.loads(res.stdout)
    assert (stats["requests"], stats["bytes"], stats["unique_ips"]) == (3, (1 << 40) + (1 << 39), 2)
    assert [d["day"] for d in stats["days"]] == ["2024-11-20", "2024-11-21"]
    day1 = stats["days"][0]
    assert (day1["requests"], day1["unique_ips"], day1["tib"]) == (2, 2, 1.5)
    assert day1["registries"] == [{"registry": "docker.io", "requests": 2, "bytes": (1 << 40) + (1 << 39),
                                   "tib": 1.5, "unique_ips": 2, "object_bytes": 0, "unjoined_bytes": 0,
                                   "exact_bytes": 0, "timed_bytes": 0, "object_share": 0.0}]

    res = invoke("ingest", "logs", "--json")                        # exactly once
    assert json.loads(res.stdout)["events"] == 0
    text = invoke("stats").output
    assert "2024-11-20" in text and "docker.io" in text and "1.500000" in text


def test_ingest_the_committed_samples(workdir):
    shutil.copytree(SAMPLES, workdir / "samples")
    res = invoke("ingest", "samples", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    formats = {Path(f["path"]).name: f["format"] for f in out["per_file"]}
    # the object stores' log objects too, whose names have no suffix
    # and the redirect-mode mirror's day (sample_logs/redirect-mode/): an hourly log object a store
    redirect = SAMPLES / "redirect-mode"
    hourly = {p.name: store for store in ("s3", "oss") for p in (redirect / store).rglob("*") if p.is_file()}
    redirect_rows = sum(len(p.read_text().splitlines()) for store in ("s3", "oss")
                        for p in (redirect / store).rglob("*") if p.is_file())
    assert formats == {"crproxy.log": "clf", "access.log.1": "combined", "access.log.2.gz": "combined",
                       "access.json": "nginx-json", "access.log": "main",
                       "2024-11-20-10-00-00-5C3E6F7A8B9C0D1E": "s3",
                       "MyLog-mirror-blobs2024-11-20-10-00-00-0001": "oss",
                       "20241120T100000Z_20241120T110000Z_4f1c2a8e": "logpush", **hourly}
    assert len(hourly) > 20 and len(out["per_file"]) == 9 + len(hourly)
    assert out["events"] > 3000 and out["proxy_events"] > 0 and out["object_events"] == 73 + redirect_rows
    assert out["lines"] == out["events"] + out["rejected"] + out["proxy_events"]
    text = invoke("ingest", "samples").output          # read already: nothing new, said per file
    assert "object-storage events" not in text
    fresh = invoke("ingest", "samples", "--db", "other.duckdb").output
    assert "24 object-storage events, 1 rejected" in fresh and f"object-storage events {73 + redirect_rows}" in fresh


def test_missing_path_is_one_line_error_and_nothing_written(workdir):
    write(workdir / "ok.log", [LINE.format(n=1, size=1)])
    res = invoke("ingest", "ok.log", "missing.log", "--db", "x.duckdb")
    assert res.exit_code == 2
    assert res.stderr.strip() == "pullwarden: error: missing.log: no such file or directory"
    assert duckdb.connect("x.duckdb").execute("select count(*) from events").fetchone() == (0,)


def test_bad_format_and_log_format(workdir):
    write(workdir / "ok.log", [LINE.format(n=1, size=1)])
    res = invoke("ingest", "ok.log", "--format", "apache")
    assert res.exit_code == 2 and "unknown format 'apache'" in res.stderr
    res = invoke("ingest", "ok.log", "--log-format", '$remote_addr "$request')
    assert res.exit_code == 2 and "odd number of quote characters" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unrecognised_file_is_an_error(workdir):
    write(workdir / "notes.log", ["hello", "world"])
    res = invoke("ingest", "notes.log")
    assert res.exit_code == 2 and "notes.log: no known format fits" in res.stderr


def test_unknown_setting_names_file_and_line(workdir):
    Path("pullwarden.toml").write_text('db = "x.duckdb"\n\nchunk_mbs = 4\n')
    res = invoke("stats")
    assert res.exit_code == 2
    assert "pullwarden.toml:3: unknown setting 'chunk_mbs'" in res.stderr


def test_settings_precedence(workdir, monkeypatch):
    Path("cfg.toml").write_text('db = "from-file.duckdb"\n')
    monkeypatch.setenv("PULLWARDEN_DB", "from-env.duckdb")
    write(workdir / "a.log", [LINE.format(n=1, size=1)])
    assert invoke("ingest", "a.log", "--config", "cfg.toml").exit_code == 0
    assert Path("from-env.duckdb").exists() and not Path("from-file.duckdb").exists()
    assert invoke("ingest", "a.log", "--config", "cfg.toml", "--db", "from-flag.duckdb").exit_code == 0
    assert Path("from-flag.duckdb").exists()


def test_help_explains_each_command():
    for cmd in ([], ["ingest"], ["stats"]):
        res = invoke(*cmd, "--help")
        assert res.exit_code == 0 and "Usage:" in res.output
    assert "exactly once" in " ".join(invoke("ingest", "--help").output.split())


def test_a_held_database_is_named_with_the_holders_pid(workdir):
    import subprocess
    import sys
    db = workdir / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('ready', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        res = invoke("stats", "--db", str(db))
        assert res.exit_code == 2
        assert f"held by another pullwarden process (pid {holder.pid})" in res.stderr
    finally:
        holder.kill()
        holder.wait()


def test_rejects_are_all_counted_and_the_first_n_kept(workdir):
    bad = [f"garbage line {n}" for n in range(7)]
    write(workdir / "a.log", [LINE.format(n=1, size=1)] + bad)
    Path("pullwarden.toml").write_text("rejects_kept_per_file = 3\n")
    out = json.loads(invoke("ingest", "a.log", "--format", "main", "--json").stdout)
    assert (out["events"], out["rejected"]) == (1, 7)
    con = duckdb.connect("data/pullwarden.duckdb")
    assert con.execute("select line_no, line from rejects order by line_no").fetchall() == [
        (2, "garbage line 0"), (3, "garbage line 1"), (4, "garbage line 2")]
    assert con.execute("select rejects from files").fetchone() == (7,)


def test_stats_with_requests_that_have_no_registry(workdir):
    # ping requests (GET /v2/) have no registry: their row must not be taken for the day's total
    write(workdir / "a.log", [LINE.format(n=1, size=10),
                              LINE.format(n=2, size=0).replace("/v2/docker.io/library/nginx/blobs/sha256:ab", "/v2/")])
    for _ in range(3):
        invoke("ingest", "a.log", "--format", "main")
        out = json.loads(invoke("stats", "--json").stdout)
        day = out["days"][0]
        assert day["requests"] == 2 and sorted(r["registry"] or "" for r in day["registries"]) == ["", "docker.io"]

"""`pullwarden serve` as operators run it: one process, the API, and the jobs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from datetime import datetime, timedelta, timezone

import httpx
from click.testing import CliRunner

from cli.main import cli
from tests.enforcer_helpers import free_port
from tests.scenarios import generate


def test_serve_ingests_detects_publishes_and_owns_the_file(workdir):
    # live traffic: the last 20 hours, with a scanner in it (decisions run on event time and the
    # policy shows what is in force at the wall clock, so old sample logs would publish nothing)
    start = (datetime.now(timezone.utc) - timedelta(hours=20)).replace(minute=0, second=0, microsecond=0)
    lines, actors = generate(days=1, start=start, scale=0.3, kinds={"scanner", "light"})
    (workdir / "logs").mkdir()
    (workdir / "logs" / "access.log").write_text("\n".join(lines[: len(lines) * 3 // 4]) + "\n")
    scanner = next(a for a in actors if a.kind == "scanner").addresses[0]
    port = free_port()
    (workdir / "pullwarden.toml").write_text(
        f'sources = ["logs"]\nport = {port}\ningest_interval = 0.5\ndetect_interval = 1\n'
        f'publish_interval = 0.5\n')
    key = json.loads(CliRunner().invoke(cli, ["keys", "create", "--role", "proxy", "--name", "edge-1", "--json"])
                     .stdout)["key"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve"], cwd=workdir,
                            env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        policy = None
        while time.time() < deadline:
            try:
                health = httpx.get(url + "/healthz", timeout=2).json()
                policy = httpx.get(url + "/v1/policy", headers={"X-Api-Key": key}, timeout=5).json()
                if policy["bans"] and health["jobs"].get("detect", {}).get("last_ok"):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert policy and f"ip:{scanner}" in policy["bans"], policy["bans"]
        assert policy["bans"][f"ip:{scanner}"]["rule"] in ("tag-scanner", "error-storm")
        assert health["status"] == "ok" and health["jobs"]["ingest"]["error"] is None
        # ingest cannot open the file the server holds, and says who holds it; stats asks the
        # server, and without a key says what it needs
        res = CliRunner().invoke(cli, ["ingest", "logs"])
        assert res.exit_code == 2 and f"(pid {proc.pid})" in res.stderr
        res = CliRunner().invoke(cli, ["stats"])
        assert res.exit_code == 2 and "needs a key (an admin key for changes" in res.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert CliRunner().invoke(cli, ["stats", "--json"]).exit_code == 0   # released on shutdown


def test_keys_are_shown_once_and_stored_hashed(workdir):
    res = CliRunner().invoke(cli, ["keys", "create", "--role", "viewer", "--name", "grafana"])
    key = res.stdout.strip()
    assert res.exit_code == 0 and key.startswith("pw_") and "shown once" in res.stderr
    assert CliRunner().invoke(cli, ["keys", "create", "--role", "viewer", "--name", "grafana"]).exit_code == 2
    listed = CliRunner().invoke(cli, ["keys", "list"]).stdout
    assert "grafana viewer" in listed and key not in listed
    import duckdb
    con = duckdb.connect("data/pullwarden.duckdb")
    assert key not in str(con.execute("select * from api_keys").fetchall())
    con.close()
    assert CliRunner().invoke(cli, ["keys", "revoke", "grafana"]).exit_code == 0
    assert "revoked" in CliRunner().invoke(cli, ["keys", "list"]).stdout


def test_up_serves_the_demo_month_and_shows_how_to_talk_to_it(workdir):
    import shutil
    from tests.test_cli import SAMPLES
    shutil.copytree(SAMPLES, workdir / "sample_logs")          # a checkout: up serves the demo month
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "up", "--port", str(port)],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        while not banner or not banner[-1].startswith("pullwarden serving on"):
            line = proc.stderr.readline()
            assert line, "up stopped before serving"
            banner.append(line)
        key = next(b for b in banner if b.startswith("admin key (shown once")).split(": ", 1)[1].strip()
        assert any(f"curl -s -H 'X-Api-Key: {key}'" in b for b in banner)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        active = httpx.get(f"http://127.0.0.1:{port}/v1/stats/decisions?active=true",
                           headers={"X-Api-Key": key}).json()
        # live decisions, with reasons: the month ends now, so its abusers are in force
        assert {d["rule"] for d in active} >= {"tag-scanner", "ci-repull-storm", "rotation-range"}
        scanner = next(d["value"] for d in active if d["rule"] == "tag-scanner")
        check = httpx.get(f"http://127.0.0.1:{port}/v1/check?ip={scanner}", headers={"X-Api-Key": key}).json()
        assert check["allowed"] is False
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    # one line per decided entity: the scanner's, with every rule that decided on it
    assert "decision(s) in force" in out and [x for x in out.splitlines() if f"ip {scanner} " in x and "tag-scanner" in x]
    assert "ingested" in out and "last 30 days:" in out


def test_up_outside_a_checkout_says_what_it_needs(workdir):
    res = CliRunner().invoke(cli, ["up"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "set `sources`" in res.stderr
    res = CliRunner().invoke(cli, ["up"], env={"PULLWARDEN_SOURCES": "nowhere/*.log"})
    assert res.exit_code == 2 and "nothing at nowhere/*.log" in res.stderr


def test_admin_changes_from_the_command_line_are_audited(workdir):
    def run(*args):
        res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.stdout
    new = int(run("ban", "range", "203.0.113.9/24", "--duration", "2h", "--reason", "rotation").split("#")[1])
    run("assign", "user", "ci-bot", "--tier", "throttled", "--reason", "heavy CI")
    run("images", "add", "allowed", "docker.io/library/*", "ghcr.io/**", "--reason", "allow-list")
    run("tiers", "set", "partner", "--rpm", "600", "--burst", "900", "--reason", "partners")
    run("budget", "set", "120", "--reason", "new contract")
    run("unban", str(new), "--reason", "mistake")
    assert "docker.io/library/*" in run("images", "list")
    assert "name=partner  requests_per_minute=600  burst=900  concurrent=-" in run("tiers", "list")
    bad = CliRunner().invoke(cli, ["tiers", "set", "x", "--burst", "10", "--reason", "x"])
    assert bad.exit_code == 2 and "a burst needs a rate" in bad.stderr
    bad = CliRunner().invoke(cli, ["assign", "ip", "198.51.100.1", "--tier", "gold", "--reason", "x"])
    assert bad.exit_code == 2 and "unknown tier 'gold'" in bad.stderr
    assert CliRunner().invoke(cli, ["unban", "999", "--reason", "x"]).exit_code == 2
    import duckdb
    con = duckdb.connect("data/pullwarden.duckdb")
    audit = con.execute("select actor, action, target, reason from audit order by ts").fetchall()
    con.close()
    assert [a[1] for a in audit] == ["add ban", "add throttle", "add to allowed images", "set tier", "set budget",
                                     "revoke ban"]
    assert all(a[0].startswith("cli:") for a in audit) and audit[0][2] == "range 203.0.113.0/24"

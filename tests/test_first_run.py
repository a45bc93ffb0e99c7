"""The first run on a fresh clone: the demo month ends now, shows live decisions, and grows
exactly once; live commands and the API judge at the same wall clock."""
from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime, timedelta

import httpx
from click.testing import CliRunner

from cli.main import cli
from core.clock import utcnow
from core.settings import load
from core.store import open_store
from enforcer.keys import create_key
from ingest.pipeline import Ingester
from sample_logs.month import LIVE, OBJECTS, SINCE, STORES, write_month


def invoke(*args, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


def test_demo_shows_live_decisions_with_reasons_and_reruns_add_only_todays_lines(workdir):
    res = invoke("demo", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["generated"]["days"] == 30 and out["ingested"]["rejected"] == 0
    assert out["ingested"]["lines"] == out["generated"]["lines"] > 300_000
    assert out["last_30_days"]["addresses"] > 1000 and out["last_30_days"]["tib"] > 1
    now = datetime.fromisoformat(out["now"])
    assert abs((utcnow() - now).total_seconds()) < 120                      # judged at the wall clock
    in_force = {(d["rule"], d["scope"], d["effect"]) for d in out["in_force"]}
    assert {("tag-scanner", "ip", "ban"), ("ci-repull-storm", "ip", "throttle"),
            ("rotation-range", "range", "ban"), ("reseller-proxy", "ip", "ban")} <= in_force
    assert all(d["reason"] and datetime.fromisoformat(str(d["until"])) > now for d in out["in_force"])
    # the same decisions, from the live command
    active = json.loads(invoke("decisions", "list", "--active", "--json").stdout)
    assert {d["id"] for d in active} == {d["id"] for d in out["in_force"]}

    again = json.loads(invoke("demo", "--json").stdout)
    assert again["generated"]["files"] <= 1 + len(STORES) and again["ingested"]["lines"] == again["generated"]["lines"]
    store = open_store("data/pullwarden.duckdb")
    try:
        lines = sum(len(p.read_bytes().splitlines()) for p in (workdir / "data" / "sample_logs").glob(f"{LIVE}*"))
        assert store.value("select count(*) from events") == lines       # every line once
    finally:
        store.close()
    # the story (issue 23): bytes from the buckets' logs, a month over its budget with the guard's
    # simulated action and what its tier would save, addresses with AS names
    m = again["last_30_days"]
    assert m["object_tib"] > 0.5 and m["unjoined_gib"] > 0
    b = again["budget"]
    assert b["budget_tib"] == 20 and b["projected_tib"] > b["budget_tib"] and b["level"] in ("projected", "100%")
    assert b["action"]["simulated"] and b["action"]["tier"] == "heavy"
    assert 0 < b["whatif"]["saved_tib"] < b["used_tib"]
    store = open_store("data/pullwarden.duckdb")
    try:
        everyone = store.value("select count(*) from ip_info")
        unnamed = [ip for (ip,) in store.execute("select ip from ip_info where as_org is null or country is null")]
    finally:
        store.close()
    # but the mirror's own address, filling its bucket (in the bucket's log)
    assert everyone > 1000 and all(ipaddress.ip_address(ip).is_private for ip in unnamed), unnamed
    # people read one line per decided entity, every rule on it, times to the second in report_timezone
    text = invoke("demo", env={"PULLWARDEN_REPORT_TIMEZONE": "Asia/Shanghai"}).stdout
    assert "decision(s) in force" in text and "guard: " in text and "what-if: " in text
    entities = {}
    for d in again["in_force"]:
        entities.setdefault(f"{d['scope']} {d['value']} ", set()).add(d["rule"])
    assert len(entities) < len(again["in_force"])          # two rules decided one address
    for entity, rules in entities.items():
        [line] = [x for x in text.splitlines() if entity in x]
        assert set(line.split("[", 1)[1].split("]")[0].split(", ")) == rules, line
        assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CST ", line), line
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", text)


def test_the_month_grows_by_appending_and_rotates_at_midnight(tmp_path):
    """Written in three steps (morning, evening, the next morning) the files are those written in
    one step, and an ingest after each step reads every line exactly once."""
    t1 = datetime(2026, 11, 20, 7, 30)
    steps, whole = tmp_path / "steps", tmp_path / "whole"
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    try:
        for t in (t1, t1 + timedelta(hours=12), t1 + timedelta(hours=24)):
            written = write_month(steps, t, days=2)
            assert written.lines > 0
            report = Ingester(store, cfg).run([str(steps)])
            assert report.total("events") == written.lines and report.total("rejects") == 0
        whole.mkdir()                                               # the blob cache began on the same day
        (whole / SINCE).write_text((steps / SINCE).read_text())
        write_month(whole, t1 + timedelta(hours=24), days=3)        # from the same first day
        names = sorted(p.name for p in whole.glob(f"{LIVE}*"))
        assert names == [LIVE, f"{LIVE}-20261118", f"{LIVE}-20261119", f"{LIVE}-20261120"]
        assert sorted(p.name for p in steps.glob(f"{LIVE}*")) == names
        for name in names:
            assert (steps / name).read_bytes() == (whole / name).read_bytes(), name
        # the buckets' logs of the redirect-mode days too, today's grown by appending like the proxy's
        buckets = sorted(str(p.relative_to(whole)) for p in (whole / OBJECTS).rglob("*") if p.is_file())
        assert len(buckets) == 2 * 4 and buckets == sorted(str(p.relative_to(steps))
                                                           for p in (steps / OBJECTS).rglob("*") if p.is_file())
        for name in buckets:
            assert (steps / name).read_bytes() == (whole / name).read_bytes(), name
        total = sum(len((whole / n).read_bytes().splitlines()) for n in names)
        assert store.value("select count(*) from events") == total
        latest = store.value("select max(ts) from events")
        assert t1 + timedelta(hours=23) < latest < t1 + timedelta(hours=24)     # nothing after "now"
    finally:
        store.close()


def test_decisions_list_active_and_the_api_agree_on_one_database(workdir):
    """A ban made now, a replay's decision that ended long ago on the wall clock, a simulated
    one: the command line and /v1/decisions see the same ones in force."""
    db = "data/pullwarden.duckdb"
    assert invoke("ban", "ip", "203.0.113.7", "--duration", "2h", "--reason", "scraper").exit_code == 0
    assert invoke("ban", "range", "198.51.100.0/24", "--duration", "1d", "--reason", "rotation",
                  env={"PULLWARDEN_NOW": "2024-11-20T12:00"}).exit_code == 0          # a replay's
    store = open_store(db)
    store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until,
                     simulated) values (nextval('decision_seq'), 'ip', '192.0.2.9', 'ban', 'r', 'rule', 'x', ?, ?,
                     true)""", [utcnow(), utcnow() + timedelta(hours=3)])
    key = create_key(store, "edge", "proxy", utcnow())
    store.close()
    cli_active = {(d["scope"], d["value"]) for d in
                  json.loads(invoke("decisions", "list", "--active", "--json").stdout)}
    assert cli_active == {("ip", "203.0.113.7")}
    replayed = {(d["scope"], d["value"]) for d in json.loads(
        invoke("decisions", "list", "--active", "--json", env={"PULLWARDEN_NOW": "2024-11-20T13:00"}).stdout)}
    assert replayed == {("range", "198.51.100.0/24")}

    from tests.enforcer_helpers import free_port
    import threading
    import time

    import uvicorn

    from enforcer.app import create_app
    from enforcer.service import Services
    store = open_store(db)
    services = Services(store, load(None, {"db": db}, environ={}))       # the server's own clock: the wall
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/decisions/stream?startup=true", headers={"X-Api-Key": key})
        api_active = {(d["scope"].lower(), d["value"]) for d in r.json()["new"]}
        assert api_active == cli_active
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def test_the_demo_shows_every_kind_of_abuse_at_any_hour_of_the_day(tmp_path):
    """The demo's abusers keep their clients and images from one day to the next, so a rule over
    24 hours finds them whatever the hour a first run happens at (a /24 rotation was missed in
    the first half of the UTC day when each day drew its CI fleet a new docker version)."""
    from rules.detect import detect
    from rules.engine import load_rules
    wanted = {("tag-scanner", "ip", "ban"), ("ci-repull-storm", "ip", "throttle"),
              ("rotation-range", "range", "ban"), ("reseller-proxy", "ip", "ban"), ("error-storm", "ip", "ban")}
    for hour in (0.5, 9, 17):
        now = datetime(2026, 12, 2) + timedelta(hours=hour)
        cfg = load(None, {"db": str(tmp_path / f"{hour}.duckdb")}, environ={})
        write_month(tmp_path / f"logs-{hour}", now, days=2)
        store = open_store(cfg.db)
        try:
            Ingester(store, cfg).run([str(tmp_path / f"logs-{hour}")])
            detect(store, cfg, load_rules(store, None, None), now)
            found = set(store.execute("""select distinct rule, scope, effect from decisions
                                         where until > ? and held is null and not simulated""", [now]))
        finally:
            store.close()
        assert wanted <= found, (hour, found)

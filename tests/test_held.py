"""Decisions the circuit breaker held: never enforced, listed with their reason, approved or
dropped by an admin from the command line or over the API, audited."""
from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from core.store import open_store
from tests.enforcer_helpers import Enforcer
from tests.test_cli import invoke
from tests.test_detect_cli import setup_samples

BROKEN = """name: broken-everyone
description: "A site rule whose threshold lost its number: it matches every client."
entity: address
window: 24h
where: requests > 0
action: ban
duration: 24h
reason: "{requests:int} requests in 24h"
cases:
  - {expect: match, features: {requests: 1}}
  - {expect: no-match, features: {requests: 0}}
"""


def test_the_command_line_lists_approves_and_drops_held_decisions(workdir, monkeypatch):
    setup_samples(workdir)
    monkeypatch.setenv("PULLWARDEN_NOW", "latest")      # a replay: every command below judges at one time
    (workdir / "site").mkdir()
    (workdir / "site" / "broken.yml").write_text(BROKEN)
    res = invoke("detect", "--rules", "site")
    assert res.exit_code == 0, res.output
    assert ("HELD rule broken-everyone: 45 new bans held (the rule would hit 45 of the 45 addresses active in the "
            "last 24h; one rule may ban 5 in a pass: 2% of them, at least 5); approve with "
            "`pullwarden decisions approve --rule broken-everyone --reason ...`") in res.stdout
    # each new decision counted once: enforced, held (per rule) or simulated
    assert ("findings 53  new decisions 53: 3 enforced, 45 held by the circuit breaker (rule broken-everyone: 45), "
            "5 simulated  extended 0\n") in res.stdout
    held = json.loads(invoke("decisions", "list", "--held", "--json").stdout)
    assert len(held) == 45 and {d["rule"] for d in held} == {"broken-everyone"}
    assert all(d["held"].startswith("the rule would hit 45 of the 45") for d in held)
    assert "held      ban ip 203.0.113.9" in invoke("decisions", "list", "--held").stdout
    active = json.loads(invoke("decisions", "list", "--active", "--json").stdout)
    assert {d["rule"] for d in active} == {"ci-repull-storm", "tag-scanner", "error-storm"}   # the others applied

    again = json.loads(invoke("detect", "--rules", "site", "--json").stdout)       # found again: not repeated
    assert again["held"] == [] and again["new"] == []

    scraper = next(d["id"] for d in held if d["value"] == "203.0.113.9")
    res = invoke("decisions", "approve", str(scraper), "--reason", "it is a scraper after all")
    assert res.exit_code == 0 and "1 held decision(s) approved" in res.stdout
    active = json.loads(invoke("decisions", "list", "--active", "--json").stdout)
    assert ("broken-everyone", "203.0.113.9") in {(d["rule"], d["value"]) for d in active}

    assert invoke("allow", "add", "ip", "198.18.0.66", "--reason", "our scanner").exit_code == 0
    ours = next(d["id"] for d in held if d["value"] == "198.18.0.66")
    res = invoke("decisions", "approve", str(ours), "--reason", "x")
    assert res.exit_code == 2 and "allowlisted, never banned" in res.stderr      # an allowlist entry wins

    res = invoke("decisions", "drop", "--rule", "broken-everyone", "--reason", "a typo in the threshold")
    assert res.exit_code == 0 and "44 held decision(s) dropped" in res.stdout
    assert json.loads(invoke("decisions", "list", "--held", "--json").stdout) == []
    res = invoke("decisions", "approve", str(scraper), "--reason", "again")
    assert res.exit_code == 2 and f"no held decision #{scraper}" in res.stderr
    assert invoke("decisions", "drop", "--rule", "broken-everyone", "--reason", "x").exit_code == 2   # none left
    assert "their ids, or --rule" in invoke("decisions", "approve", "--reason", "x").stderr
    assert invoke("decisions", "list", "--active", "--held").exit_code == 2

    store = open_store("data/pullwarden.duckdb")
    try:
        audit = store.execute("select actor, action, target, reason from audit where action like '%held' "
                              "or actor = 'breaker' order by rowid")
    finally:
        store.close()
    assert [(a[0].split(":")[0], a[1], a[2]) for a in audit] == [
        ("breaker", "hold", "rule broken-everyone"), ("cli", "approve held", "rule broken-everyone"),
        ("cli", "drop held", "rule broken-everyone")]


@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def held(api, value: str) -> int:
    with api.services.lock:
        return api.store.value("""
            insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until, held)
            values (nextval('decision_seq'), 'ip', ?, 'ban', 'broken', 'rule', '3 requests', ?, ?,
                    'the rule would hit 40 of the 40 addresses active in the last 24h') returning id""",
            [value, api.clock(), api.clock() + timedelta(hours=4)])


def test_the_api_never_enforces_held_decisions_and_admins_approve_or_drop_them(api):
    admin, proxy, viewer = (api.headers(r) for r in ("admin", "proxy", "viewer"))
    a, b = held(api, "203.0.113.7"), held(api, "203.0.113.8")
    v1 = api.services.publisher.publish().version
    assert httpx.get(api.url + "/v1/policy", headers=proxy).json()["bans"] == {}
    assert httpx.get(api.url + "/v1/check?ip=203.0.113.7", headers=proxy).json()["allowed"]
    stream = httpx.get(api.url + "/v1/decisions/stream?startup=true", headers=proxy).json()
    assert stream["new"] == []
    listed = httpx.get(api.url + "/v1/stats/decisions?held=true", headers=viewer).json()
    assert {(d["id"], d["held"]) for d in listed} == {
        (a, "the rule would hit 40 of the 40 addresses active in the last 24h"),
        (b, "the rule would hit 40 of the 40 addresses active in the last 24h")}
    assert httpx.get(api.url + "/v1/stats/decisions?active=true", headers=viewer).json() == []

    r = httpx.post(api.url + "/v1/admin/decisions/approve", headers=admin, json={"ids": [a], "reason": "scraper"})
    assert r.status_code == 200 and r.json()["approved"] == 1 and r.json()["policy_version"] > v1
    assert set(httpx.get(api.url + "/v1/policy", headers=proxy).json()["bans"]) == {"ip:203.0.113.7"}
    delta = httpx.get(api.url + f"/v1/policy/changes?since={v1}", headers=proxy).json()
    assert [e["value"] for e in delta["upsert"]["bans"]] == ["203.0.113.7"]        # pollers hear of it
    assert not httpx.get(api.url + "/v1/check?ip=203.0.113.7", headers=proxy).json()["allowed"]
    assert [d["value"] for d in httpx.get(api.url + "/v1/decisions/stream?startup=true",
                                          headers=proxy).json()["new"]] == ["203.0.113.7"]

    r = httpx.post(api.url + "/v1/admin/decisions/drop", headers=admin, json={"ids": [b], "reason": "typo"})
    assert r.status_code == 200 and r.json()["revoked"] == 1
    assert httpx.get(api.url + "/v1/stats/decisions?held=true", headers=viewer).json() == []
    assert set(httpx.get(api.url + "/v1/policy", headers=proxy).json()["bans"]) == {"ip:203.0.113.7"}

    for path, body in (("approve", {"ids": [b], "reason": "x"}), ("drop", {"ids": [a], "reason": "x"})):
        r = httpx.post(api.url + f"/v1/admin/decisions/{path}", headers=admin, json=body)
        assert r.status_code == 404 and "no held decision" in r.json()["detail"]
    assert httpx.post(api.url + "/v1/admin/decisions/approve", headers=admin,
                      json={"ids": [], "reason": "x"}).status_code == 422
    assert httpx.post(api.url + "/v1/admin/decisions/approve", headers=viewer,
                      json={"ids": [a], "reason": "x"}).status_code == 403
    audit = httpx.get(api.url + "/v1/admin/audit", headers=admin).json()
    assert sorted((e["actor"], e["action"], json.loads(e["details"])["ids"], e["reason"]) for e in audit) == [
        ("admin", "approve held", [a], "scraper"), ("admin", "drop held", [b], "typo")]


def test_a_rule_never_bans_or_throttles_a_trusted_proxy_or_this_server(tmp_path):
    """When the log gives every client the load balancer's address (real_ip or --behind
    missing), that address is the heaviest client there is: the rule's decision is held, with
    the reason, and the storm of an ordinary address beside it is enforced."""
    from rules.detect import detect
    from rules.engine import load_rules
    from tests.detect_helpers import T0, add_events, settings, storm
    store = open_store(str(tmp_path / "db.duckdb"))
    cfg = settings(db=str(tmp_path / "db.duckdb"), trusted_proxies=["10.0.0.0/30"])
    add_events(store, storm("10.0.0.2", hours=24) + storm("127.0.0.1", hours=24) + storm("203.0.113.9", hours=24))
    result = detect(store, cfg, load_rules(store, ["default"]), T0 + timedelta(hours=24))
    made = {d.value: d for d in result.new if d.rule == "ci-repull-storm"}
    assert set(made) == {"10.0.0.2", "127.0.0.1", "203.0.113.9"}
    # ci-repull-storm throttles: the reason says what the decision would have done
    assert made["10.0.0.2"].held == ("10.0.0.2/32 covers this server or a trusted proxy (10.0.0.0/30): "
                                     "a throttle there throttles everyone behind it")
    assert made["127.0.0.1"].held == "127.0.0.1/32 is loopback: no client comes from there"
    assert made["203.0.113.9"].held is None
    in_force = store.execute("""select value from decisions where held is null and not simulated
                                and revoked_at is null""")
    assert in_force == [("203.0.113.9",)]
    store.close()

"""A careless operator (issue 19 §8): a throttle is guarded like a ban (everyone, this server,
a trusted proxy, addresses no client comes from), with a throttle's wording; a `now` in the
future is refused for anything a live serve enforces."""
from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from click.testing import CliRunner

from cli.main import cli
from core.clock import utcnow
from core.store import open_store
from tests.enforcer_helpers import Enforcer

DB = "data/pullwarden.duckdb"


def invoke(*args, env=None):
    res = CliRunner().invoke(cli, list(args), env=env or {})
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def decisions() -> list[tuple]:
    store = open_store(DB)
    try:
        return store.execute("select scope, value, effect, tier from decisions order by id")
    finally:
        store.close()


# ---- throttles get the ban guard -----------------------------------------------------------------

@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def assign(api, value, scope="ip", tier="throttled", **extra):
    return httpx.post(api.url + "/v1/admin/assignments", headers=api.headers("admin"), timeout=10,
                      json={"scope": scope, "value": value, "tier": tier, "duration": "1h", "reason": "test", **extra})


@pytest.mark.parametrize("scope,value,why", [
    ("range", "0.0.0.0/1", "0.0.0.0/1 is wider than /16"),          # with 128.0.0.0/1: everyone
    ("range", "128.0.0.0/1", "128.0.0.0/1 is wider than /16"),
    ("ip", "127.0.0.1", "127.0.0.1 is loopback: no client comes from there"),
    ("ip", "0.0.0.0", "0.0.0.0 is unspecified"), ("ip", "::", ":: is unspecified"),
    ("ip", "224.0.0.1", "224.0.0.1 is multicast"), ("ip", "fe80::1", "fe80::1 is link-local"),
    ("range", "127.0.0.0/24", "127.0.0.0/24 is loopback")])
def test_a_throttle_on_everyone_or_no_client_is_refused_over_the_api(api, scope, value, why):
    for tier in ("throttled", "unlimited"):             # a boost for everyone blows the budget as surely
        r = assign(api, value, scope, tier)
        assert r.status_code == 422 and r.json()["detail"].startswith(why), r.text
        noun = "throttle" if tier == "throttled" else "boost"
        assert r.json()["detail"].endswith(f"to {noun} it anyway)"), r.text
    assert decisions_via(api) == []


def decisions_via(api) -> list:
    with api.services.lock:
        return api.store.execute("select value from decisions")


def test_the_whole_space_is_never_throttled_and_a_forced_throttle_is_audited(api):
    for whole in ("0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"):
        r = assign(api, whole, "range", force=True)
        assert r.status_code == 422 and "address space: never throttled" in r.json()["detail"], r.text
    r = assign(api, "127.0.0.1", force=True)
    assert r.status_code == 201, r.text
    audit = httpx.get(api.url + "/v1/admin/audit", headers=api.headers("admin"), timeout=10).json()
    assert audit[0]["action"] == "add throttle" and audit[0]["target"] == "ip 127.0.0.1"
    assert json.loads(audit[0]["details"])["forced"] == "127.0.0.1 is loopback: no client comes from there"


def test_the_command_line_guards_a_throttle_on_our_load_balancer(workdir):
    (workdir / "pullwarden.toml").write_text('trusted_proxies = ["10.0.0.5"]\n')
    r = invoke("assign", "ip", "10.0.0.5", "--tier", "throttled", "--reason", "heavy")
    assert r.exit_code == 2
    assert ("10.0.0.5 covers this server or a trusted proxy (10.0.0.5/32): a throttle there throttles everyone "
            "behind it; refused (--force") in r.stderr
    r = invoke("assign", "range", "0.0.0.0/0", "--tier", "throttled", "--reason", "everyone")
    assert r.exit_code == 2 and "never throttled" in r.stderr and "never banned" not in r.stderr
    assert decisions() == []
    assert invoke("assign", "ip", "10.0.0.5", "--tier", "throttled", "--reason", "a test LB", "--force").exit_code == 0
    assert invoke("assign", "ip", "198.51.100.7", "--tier", "throttled", "--reason", "heavy CI").exit_code == 0
    assert decisions() == [("ip", "10.0.0.5", "throttle", "throttled"), ("ip", "198.51.100.7", "throttle", "throttled")]


# ---- a `now` in the future -----------------------------------------------------------------------

def test_a_future_now_is_refused_for_what_serve_enforces(workdir):
    future = {"PULLWARDEN_NOW": "2030-01-01T00:00"}
    for args in (["ban", "ip", "203.0.113.5", "--duration", "1h", "--reason", "x"],
                 ["assign", "ip", "203.0.113.5", "--tier", "throttled", "--reason", "x"],
                 ["allow", "add", "ip", "203.0.113.6", "--reason", "x"],
                 ["detect"]):
        r = invoke(*args, env=future)
        assert r.exit_code == 2, (args, r.output)
        assert "now = 2030-01-01 00:00 is" in r.stderr and "ahead of the wall clock" in r.stderr, r.stderr
        assert "unset it to act now" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert decisions() == []
    r = invoke("detect", "--now", "2030-01-01T00:00")
    assert r.exit_code == 2 and "ahead of the wall clock" in r.stderr


def test_a_replay_in_the_past_and_a_clock_a_little_ahead_still_work(workdir):
    soon = (utcnow() + timedelta(minutes=2)).isoformat(timespec="seconds")
    assert invoke("ban", "ip", "203.0.113.5", "--duration", "1h", "--reason", "x",
                  env={"PULLWARDEN_NOW": soon}).exit_code == 0
    assert invoke("ban", "ip", "203.0.113.6", "--duration", "1h", "--reason", "x",
                  env={"PULLWARDEN_NOW": "2024-11-20T12:00"}).exit_code == 0
    # a listing in the future reads and writes nothing: it is not refused
    assert invoke("decisions", "list", "--active", env={"PULLWARDEN_NOW": "2030-01-01T00:00"}).exit_code == 0
    assert [v for _, v, _, _ in decisions()] == ["203.0.113.5", "203.0.113.6"]

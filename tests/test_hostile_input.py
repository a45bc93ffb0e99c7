"""Careless or hostile input to the admin side: nothing dangerous accepted, every refusal one
clear line (HTTP 4xx with the reason, or `pullwarden: error: ...` and exit 2), no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import cli
from core import values
from core.store import open_store
from tests.enforcer_helpers import Enforcer, serving


@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def post(api, path, body, method="POST"):
    return httpx.request(method, api.url + path, headers=api.headers("admin"), json=body, timeout=10)


def ban(api, value, scope="ip", **extra):
    return post(api, "/v1/admin/bans", {"scope": scope, "value": value, "duration": "1h", "reason": "test", **extra})


def published(api) -> dict:
    return httpx.get(api.url + "/v1/policy", headers=api.headers("proxy"), timeout=10).json()["bans"]


def invoke(*args):
    res = CliRunner().invoke(cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


# ---- 1. bans on the whole space, half of it, loopback, this server ------------------------------

@pytest.mark.parametrize("scope,value", [
    ("range", "0.0.0.0/0"), ("range", "::/0"), ("range", "128.0.0.0/1"), ("range", "::ffff:0.0.0.0/96"),
    ("ip", "127.0.0.1"), ("ip", "::1"), ("range", "127.0.0.0/8"), ("range", "10.0.0.0/8"),
    ("range", "2001:db8::/16"), ("ip", "fe80::1"), ("ip", "169.254.1.1"), ("ip", "0.0.0.0"), ("ip", "224.0.0.1")])
def test_dangerous_bans_are_refused_and_nothing_is_published(api, scope, value):
    r = ban(api, value, scope)
    assert r.status_code == 422, r.text
    assert "refused" in r.json()["detail"] or "never banned" in r.json()["detail"]
    assert published(api) == {}


def test_a_forced_wide_ban_is_audited_and_the_whole_space_never_passes(api):
    assert ban(api, "0.0.0.0/0", "range", force=True).status_code == 422       # not even forced
    assert ban(api, "::ffff:0.0.0.0/96", "range", force=True).status_code == 422
    r = ban(api, "100.64.0.0/10", "range", force=True)
    assert r.status_code == 201
    audit = post(api, "/v1/admin/audit", None, "GET").json()
    forced = json.loads(audit[0]["details"])["forced"]
    assert "wider than /16" in forced and audit[0]["target"] == "range 100.64.0.0/10"
    assert "range:100.64.0.0/10" in published(api)


def test_the_width_limit_is_a_setting(workdir):
    (workdir / "pullwarden.toml").write_text("widest_ipv4 = 24\n")
    res = invoke("ban", "range", "198.51.100.0/23", "--reason", "rotation")
    assert res.exit_code == 2 and "wider than /24 (setting widest_ipv4)" in res.output
    assert invoke("ban", "range", "198.51.100.0/24", "--reason", "rotation").exit_code == 0
    (workdir / "pullwarden.toml").write_text("widest_ipv4 = 40\n")
    res = invoke("ban", "range", "198.51.100.0/24", "--reason", "rotation")
    assert res.exit_code == 2 and "widest_ipv4" in res.output and "must be 1 to 32" in res.output


def test_this_servers_own_address_and_trusted_proxies_need_force(workdir):
    (workdir / "pullwarden.toml").write_text('trusted_proxies = ["198.51.100.2", "2001:db8:9::/48"]\n')
    res = invoke("ban", "ip", "198.51.100.2", "--reason", "oops")
    assert res.exit_code == 2 and "trusted proxy" in res.output
    assert invoke("ban", "range", "2001:db8:9:1::/64", "--reason", "oops").exit_code == 2
    assert invoke("ban", "ip", "198.51.100.3", "--reason", "a neighbour").exit_code == 0
    res = invoke("ban", "ip", "198.51.100.2", "--reason", "yes, really", "--force")
    assert res.exit_code == 0


# ---- 2. an allowlist entry as wide as the internet ---------------------------------------------

def test_allowlisting_the_whole_space_is_refused_and_revokes_nothing(api):
    assert ban(api, "203.0.113.7").status_code == 201
    for value in ("0.0.0.0/0", "::/0", "0.0.0.0/1", "2001::/16"):
        r = post(api, "/v1/admin/allowlist", {"kind": "cidr", "value": value, "reason": "everyone"})
        assert r.status_code == 422 and "refused" in r.json()["detail"], r.text
    assert list(published(api)) == ["ip:203.0.113.7"]


# ---- 3. bans the allowlist covers ---------------------------------------------------------------

def test_a_ban_the_allowlist_covers_is_refused_in_every_scope(api):
    for kind, value in (("asn", "64500"), ("user", "ci-bot"), ("cidr", "2001:db8:5::/48"), ("ip", "192.0.2.77")):
        assert post(api, "/v1/admin/allowlist", {"kind": kind, "value": value, "reason": "ours"}).status_code == 201
    for scope, value in (("asn", "AS64500"), ("user", "ci-bot"), ("range", "2001:db8:5:1::/64"),
                         ("ip", "2001:db8:5::1"), ("ip", "192.0.2.77"), ("range", "192.0.2.77/32")):
        r = ban(api, value, scope)
        assert r.status_code == 422 and "allowlisted (ours)" in r.json()["detail"], (scope, value, r.text)
    assert published(api) == {}
    check = httpx.get(api.url + "/v1/check", params={"user": "ci-bot"}, headers=api.headers("proxy")).json()
    assert check["allowed"] is True
    stream = httpx.get(api.url + "/v1/decisions/stream?startup=true", headers=api.headers("proxy")).json()
    assert stream["new"] in ([], None)


def crowdsec(api, path):
    return httpx.get(api.url + path, headers=api.headers("proxy"), timeout=10).json() or []


def test_a_banned_range_is_published_without_the_allowlisted_addresses_inside_it(api):
    """Allowlist first or ban first, the range stays banned for everyone else, and every
    dialect is handed the same cut: /v1/check, the CrowdSec stream and /v1/decisions, the policy."""
    assert post(api, "/v1/admin/allowlist", {"kind": "ip", "value": "192.0.2.77", "reason": "our office"}).status_code == 201
    assert ban(api, "192.0.2.0/24", "range").status_code == 201
    assert ban(api, "2001:db8:7::/64", "range").status_code == 201
    assert post(api, "/v1/admin/allowlist", {"kind": "ip", "value": "2001:db8:7::1", "reason": "v6 office"}).json()["revoked"] == 0
    import ipaddress
    bans = published(api)
    v4 = [ipaddress.ip_network(e["value"]) for e in bans.values() if e["value"].startswith("192.0.2.")]
    v6 = [ipaddress.ip_network(e["value"]) for e in bans.values() if e["value"].startswith("2001:db8:7:")]
    assert len(v4) == 8 and sum(n.num_addresses for n in v4) == 255
    assert len(v6) == 64 and sum(n.num_addresses for n in v6) == 2 ** 64 - 1
    assert not any(ipaddress.ip_address("192.0.2.77") in n for n in v4)
    assert not any(ipaddress.ip_address("2001:db8:7::1") in n for n in v6)
    for ip, allowed in (("192.0.2.77", True), ("192.0.2.9", False), ("2001:db8:7::1", True), ("2001:db8:7::2", False)):
        check = httpx.get(api.url + "/v1/check", params={"ip": ip}, headers=api.headers("proxy")).json()
        assert check["allowed"] is allowed, (ip, check)
        assert bool(crowdsec(api, f"/v1/decisions?ip={ip}")) is not allowed, ip
    stream = crowdsec(api, "/v1/decisions/stream?startup=true")["new"]
    assert {d["value"] for d in stream} == {str(n) for n in v4 + v6}
    # the allowlist entry ends: the range is whole again, and a bouncer is told both halves
    with api.services.lock:
        api.store.execute("delete from allowlist where value = '192.0.2.77'")
    api.services.publisher.publish()
    later = crowdsec(api, "/v1/decisions/stream")
    assert {d["value"] for d in later["new"]} == {"192.0.2.0/24"}
    assert {d["value"] for d in later["deleted"]} == {str(n) for n in v4}
    assert crowdsec(api, "/v1/decisions?ip=192.0.2.77")


# ---- 4. values that are not addresses, AS numbers or users --------------------------------------

@pytest.mark.parametrize("scope,value", [
    ("ip", "fe80::1%eth0"), ("ip", "999.1.1.1"), ("ip", "abc"), ("ip", "1.2.3.4,5.6.7.8"), ("ip", "1.2.3.0/24"),
    ("range", "fe80::%eth0/64"), ("asn", "99999999999999999999"), ("asn", "AS0"), ("asn", "0"), ("asn", "-5"),
    ("asn", "4294967295"), ("asn", "AS１２"), ("user", " "), ("user", "a\nb,c"), ("user", "x" * 129),
    ("user", "tab\there"), ("user", "zero\u200bwidth")])
def test_values_that_name_no_client_are_refused(api, scope, value):
    r = ban(api, value, scope)
    assert r.status_code == 422, (scope, value, r.text)
    assert published(api) == {}


def test_canonical_values():
    assert values.canonical("ip", "::ffff:192.0.2.1") == "192.0.2.1"
    assert values.canonical("range", "::ffff:198.51.100.0/120") == "198.51.100.0/24"
    assert values.canonical("range", "198.51.100.77/24") == "198.51.100.0/24"
    assert values.canonical("asn", "as16509") == values.canonical("asn", "AS16509") == "16509"
    assert values.canonical("asn", "4294967294") == "4294967294"
    assert values.canonical("user", "ci-bot@example.com") == "ci-bot@example.com"


# ---- 5 (API side). unknown fields, tiers, image lists, the allowlist twice ---------------------

def test_unknown_fields_are_422_everywhere_and_a_misspelt_limit_changes_nothing(api):
    before = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy")).json()["tiers"]
    r = post(api, "/v1/admin/tiers/ci", {"rpm": 120, "reason": "CI"}, "PUT")
    assert r.status_code == 422 and "rpm" in r.text
    assert post(api, "/v1/admin/tiers/ci", {"reason": "CI"}, "PUT").status_code == 422       # no limit at all
    for path, body in (("/v1/admin/bans", {"scope": "ip", "value": "203.0.113.9", "reason": "x", "until": "never"}),
                       ("/v1/admin/allowlist", {"kind": "ip", "value": "203.0.113.9", "reason": "x", "ttl": 5}),
                       ("/v1/admin/budget", {"monthly_tib": 100, "reason": "x", "currency": "EUR"})):
        assert post(api, path, body, "PUT" if path.endswith("budget") else "POST").status_code == 422, path
    assert httpx.get(api.url + "/v1/policy", headers=api.headers("proxy")).json()["tiers"] == before


def test_a_tier_change_sets_what_it_names_and_keeps_the_rest(api):
    assert post(api, "/v1/admin/tiers/anonymous", {"requests_per_minute": 400, "reason": "more"}, "PUT").status_code == 200
    tiers = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy")).json()["tiers"]
    assert tiers["anonymous"]["requests_per_minute"] == 400 and tiers["anonymous"]["concurrent"] == 192
    assert post(api, "/v1/admin/tiers/anonymous", {"concurrent": None, "reason": "no limit"}, "PUT").status_code == 200
    tiers = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy")).json()["tiers"]
    assert tiers["anonymous"]["concurrent"] is None and tiers["anonymous"]["burst"] == 600


def test_image_lists_report_what_really_changed(api, workdir):
    r = post(api, "/v1/admin/images/blocked", {"patterns": ["docker.io/evil/*"], "reason": "malware"})
    assert r.json()["changed"] == 1
    r = post(api, "/v1/admin/images/blocked", {"patterns": ["docker.io/evil/*", "ghcr.io/evil/**"], "reason": "new"})
    assert (r.json()["changed"], r.json()["unchanged"]) == (1, 1)
    r = post(api, "/v1/admin/images/blocked", {"patterns": ["not-there", "docker.io/evil/*"], "reason": "x"}, "DELETE")
    assert r.status_code == 404 and "not-there" in r.json()["detail"]
    assert sorted(httpx.get(api.url + "/v1/policy", headers=api.headers("proxy")).json()["images"]["blocked"]) == \
        ["docker.io/evil/*", "ghcr.io/evil/**"]                  # nothing removed, the first reason kept
    with api.services.lock:
        assert api.store.value("select reason from image_lists where pattern = 'docker.io/evil/*'") == "malware"

    res = invoke("images", "remove", "blocked", "not-there", "--reason", "x")
    assert res.exit_code == 2 and "not on the blocked list: not-there" in res.output
    assert invoke("images", "add", "blocked", "a/b", "--reason", "x").output.startswith("1 pattern(s) added")
    assert "1 already on it" in invoke("images", "add", "blocked", "a/b", "c/d", "--reason", "y").output
    assert invoke("images", "remove", "blocked", "a/b", "c/d", "--reason", "z").output.startswith("2 pattern(s) removed")


def test_re_adding_an_allowlist_entry_keeps_its_reason(api):
    assert post(api, "/v1/admin/allowlist", {"kind": "ip", "value": "192.0.2.5", "reason": "office"}).status_code == 201
    r = post(api, "/v1/admin/allowlist", {"kind": "ip", "value": "::ffff:192.0.2.5", "reason": "something else"})
    assert r.status_code == 409 and "allowlisted already" in r.json()["detail"] and "office" in r.json()["detail"]
    with api.services.lock:
        assert api.store.value("select reason from allowlist where value = '192.0.2.5'") == "office"


# ---- 7. a database that is not one ---------------------------------------------------------------

@pytest.mark.parametrize("content", [os.urandom(5000), b"hello\n", b"", "dir", "truncated"])
def test_a_bad_database_file_is_one_line_and_exit_2(workdir, content):
    path = workdir / "bad.duckdb"
    if content == "dir":
        path.mkdir()
    elif content == "truncated":
        good = workdir / "good.duckdb"
        store = open_store(str(good))
        store.execute("create table filler as select range as n, repeat('x', 200) as pad from range(200000)")
        store.close()
        path.write_bytes(good.read_bytes()[:300_000])           # its header, not the blocks it points to
    else:
        path.write_bytes(content)
    for args in (["stats"], ["ingest", str(workdir)], ["decisions", "list"], ["detect"]):
        r = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *args, "--db", str(path)],
                           capture_output=True, text=True, cwd=workdir, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("pullwarden: error: ") and "bad.duckdb" in r.stderr


def test_a_database_under_a_file_is_one_line(workdir):
    (workdir / "afile").write_text("x")
    res = invoke("stats", "--db", str(workdir / "afile" / "db.duckdb"))
    assert res.exit_code == 2 and "cannot create its folder" in res.output


# ---- 11. durations -------------------------------------------------------------------------------

@pytest.mark.parametrize("duration", ["99999999h", "999999999999d", "3651d", "0h", "-1h", "1y", "1.5h", ""])
def test_absurd_durations_are_one_line(workdir, duration):
    res = invoke("ban", "ip", "203.0.113.7", "--duration", duration, "--reason", "x")
    assert res.exit_code == 2 and "bad duration" in res.output


# ---- 14. revoking a key while serve runs ---------------------------------------------------------

def test_a_leaked_key_is_revoked_through_the_running_server(workdir):
    import re
    assert invoke("keys", "create", "--role", "admin", "--name", "ops").exit_code == 0
    admin = invoke("keys", "create", "--role", "admin", "--name", "ops-2").stdout.strip()
    leaked = invoke("keys", "create", "--role", "proxy", "--name", "edge-leaked").stdout.strip()
    with serving(workdir) as url:
        assert httpx.get(url + "/v1/policy", headers={"X-Api-Key": leaked}).status_code == 200
        res = invoke("keys", "revoke", "edge-leaked")                    # no key: one line on what it needs
        assert res.exit_code == 2 and "needs a key (an admin key for changes" in res.output and "Traceback" not in res.output
        res = CliRunner().invoke(cli, ["keys", "revoke", "edge-leaked", "--reason", "leaked in a CI log"],
                                 env={"PULLWARDEN_API_KEY": admin})
        assert res.exit_code == 0, res.output
        assert httpx.get(url + "/v1/policy", headers={"X-Api-Key": leaked}).status_code == 403
        listed = CliRunner().invoke(cli, ["keys", "list", "--json"], env={"PULLWARDEN_API_KEY": admin}).stdout
        assert next(k for k in json.loads(listed) if k["name"] == "edge-leaked")["revoked_at"]
        audit = httpx.get(url + "/v1/admin/audit", headers={"X-Api-Key": admin}).json()
        assert (audit[0]["action"], audit[0]["target"], audit[0]["reason"], audit[0]["actor"]) == \
            ("revoke key", "key edge-leaked", "leaked in a CI log", "ops-2")
        assert re.fullmatch(r"pw_\S+", CliRunner().invoke(
            cli, ["keys", "create", "--role", "viewer", "--name", "grafana"],
            env={"PULLWARDEN_API_KEY": admin}).stdout.strip())
    assert not (workdir / "data" / "pullwarden.duckdb.serve.json").exists()      # withdrawn at the stop


def test_admin_changes_from_the_command_line_go_through_the_running_server(workdir):
    """While serve holds the file, ban, unban, assign, images, tiers, budget and allow reach it
    through its API, with the same answers and the same refusals, audited under the key's name."""
    admin = invoke("keys", "create", "--role", "admin", "--name", "ops").stdout.strip()
    store = open_store("data/pullwarden.duckdb")
    store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until, held)
                     values (nextval('decision_seq'), 'ip', '203.0.113.66', 'ban', 'wide-rule', 'rule', 'x',
                             now()::timestamp, now()::timestamp + interval 1 day, 'the breaker: 3% of addresses')""")
    store.close()
    with serving(workdir) as url:
        def run(*args):
            res = CliRunner().invoke(cli, list(args), env={"PULLWARDEN_API_KEY": admin})
            assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
            return res
        ban_out = run("ban", "ip", "203.0.113.7", "--duration", "2h", "--reason", "scraper")
        assert ban_out.exit_code == 0 and ban_out.stdout.startswith("decision #"), ban_out.output
        new = int(ban_out.stdout.split("#")[1])
        refused = run("ban", "range", "0.0.0.0/0", "--reason", "everyone")
        assert refused.exit_code == 2 and "whole IPv4 address space" in refused.output
        assert run("assign", "ip", "198.51.100.7", "--tier", "throttled", "--reason", "heavy CI").exit_code == 0
        assert run("images", "add", "blocked", "docker.io/evil/*", "--reason", "malware").stdout.startswith("1 pattern")
        assert run("tiers", "set", "partner", "--rpm", "600", "--reason", "partners").exit_code == 0
        assert run("budget", "set", "120", "--reason", "contract").exit_code == 0
        assert "0 active decision(s) revoked" in run("allow", "add", "ip", "192.0.2.5", "--reason", "office").stdout
        assert run("unban", str(new), "--reason", "wrong address").exit_code == 0
        active = json.loads(run("decisions", "list", "--active", "--json").stdout)
        assert [(d["scope"], d["value"], d["effect"]) for d in active] == [("ip", "198.51.100.7", "throttle")]
        approved = run("decisions", "approve", "--rule", "wide-rule", "--reason", "checked: abusers")
        assert approved.stdout.startswith("1 held decision(s) approved"), approved.output
        assert "ip:203.0.113.66" in httpx.get(url + "/v1/policy", headers={"X-Api-Key": admin}).json()["bans"]
        assert f"#{new} revoked" in run("decisions", "list").stdout
        listed = json.loads(run("allow", "list", "--json").stdout)
        assert [(a["kind"], a["value"], a["reason"]) for a in listed] == [("ip", "192.0.2.5", "office")]
        assert run("allow", "remove", "ip", "192.0.2.5", "--reason", "moved out").exit_code == 0
        gone = run("allow", "remove", "ip", "192.0.2.5", "--reason", "again")
        assert gone.exit_code == 2 and "404 no allowlist entry ip 192.0.2.5" in gone.output
        assert json.loads(run("allow", "list", "--json").stdout) == []
        policy = httpx.get(url + "/v1/policy", headers={"X-Api-Key": admin}).json()
        assert "ip:203.0.113.7" not in policy["bans"] and "ip:198.51.100.7" in policy["assignments"]
        assert policy["images"]["blocked"] == ["docker.io/evil/*"] and "partner" in policy["tiers"]
        audit = httpx.get(url + "/v1/admin/audit", headers={"X-Api-Key": admin}).json()
        assert {a["actor"] for a in audit if a["action"] != "create key"} == {"ops"}
        assert ("remove allow", "ip 192.0.2.5", "moved out") in {(a["action"], a["target"], a["reason"]) for a in audit}
        assert len(audit) >= 9


def test_the_last_admin_key_stays(workdir):
    invoke("keys", "create", "--role", "admin", "--name", "only")
    res = invoke("keys", "revoke", "only")
    assert res.exit_code == 2 and "last admin key" in res.output


# ---- every CLI argument parser, random values ----------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cli-fuzz") / "db.duckdb")


@settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from([
    ["ban", "ip"], ["ban", "range"], ["ban", "asn"], ["ban", "user"], ["assign", "ip"], ["allow", "add", "cidr"],
    ["allow", "add", "asn"], ["allow", "add", "user"], ["images", "add", "allowed"], ["images", "remove", "blocked"],
    ["tiers", "set"], ["unban"], ["keys", "revoke"], ["budget", "set"]]), value=TEXT, duration=TEXT, flag=st.booleans())
def test_random_values_to_every_cli_parser_give_an_answer_not_a_traceback(cli_db, command, value, duration, flag):
    args = [*command, value, "--reason", "fuzz", "--db", cli_db]
    if command[0] in ("ban", "assign"):
        args += ["--duration", duration or "1h"]
    if command[0] == "assign":
        args += ["--tier", duration or "throttled"]
    if command[0] == "ban" and flag:
        args.append("--force")
    if command[0] == "tiers":
        args += ["--rpm", "1" if flag else "0"]
    res = CliRunner().invoke(cli, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code in (0, 2), (args, res.output)
    store = open_store(cli_db)
    try:
        for scope, v in store.execute("select scope, value from decisions where effect = 'ban' and revoked_at is null"):
            assert values.canonical(scope, v) == v
            if scope == "range":
                assert values.network(v).prefixlen > 0
        for kind, v in store.execute("select kind, value from allowlist"):
            assert values.canonical(kind, v) == v
            if kind == "cidr":
                assert values.too_wide(values.network(v), values.WIDEST) is None
    finally:
        store.close()

"""The statistics the dashboard reads, over real HTTP: each figure equals direct SQL over the
events it comes from."""
from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cli.main import cli

from rules.rollup import roll_up
from tests.detect_helpers import add_events, ev, storm
from tests.enforcer_helpers import NOW, Enforcer, serving

DAY1 = NOW.replace(hour=0) - timedelta(days=1)       # yesterday and today, before NOW (12:00)
CI, OFFICE, V6 = "198.51.100.7", "198.51.100.20", "2001:db8::5"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    e = Enforcer(tmp_path_factory.mktemp("stats"))
    rows = storm(CI, start=DAY1, hours=30, per_hour=2, blobs=3)
    for day in (0, 1):
        t = DAY1 + timedelta(days=day, hours=9)
        rows += [ev(t, OFFICE, "manifest", nbytes=2000, ua="containerd/1.7.2"),
                 ev(t, OFFICE, digest="sha256:off", nbytes=50 << 20, ua="containerd/1.7.2"),
                 ev(t, V6, "manifest", nbytes=1000, repo="nvidia/cuda", ua="podman/4.9"),
                 ev(t, V6, "tags", nbytes=300, repo="secret/private", ua="podman/4.9", status=404)]
    with e.services.lock:
        add_events(e.store, rows)
        e.store.execute("""insert into ip_info values (?, 64500, 'CI Cloud', 'US'), (?, 64501, 'Office ISP', 'DE'),
                                                      (?, 64502, 'Six Net', 'JP')""", [CI, OFFICE, V6])
        e.store.execute("""insert into user_agents values ('docker/24.0.7', 'docker', '24.0.7', null),
                           ('containerd/1.7.2', 'containerd', '1.7.2', null), ('podman/4.9', 'podman', '4.9', null)""")
        roll_up(e.store)
    yield e
    e.stop()


def get(api, path, role="viewer", **params):
    r = httpx.get(api.url + path, headers=api.headers(role), params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def sql(api, text, params=None):
    with api.services.lock:
        return api.store.value(text, params)


def test_keys(api):
    assert get(api, "/v1/whoami") == {"name": "viewer", "role": "viewer"}
    assert httpx.get(api.url + "/v1/stats/overview", headers=api.headers("proxy")).status_code == 403
    assert httpx.get(api.url + "/v1/stats/overview").status_code == 401


def test_overview_equals_sql(api):
    api.ban(CI, hours=2)
    o = get(api, "/v1/stats/overview")
    assert o["today"]["day"] == NOW.date().isoformat()
    assert o["today"]["bytes"] == sql(api, "select sum(bytes) from events where cast(ts as date) = ?", [NOW.date()])
    assert o["today"]["addresses"] == 3
    by_registry = {(r["day"], r["registry"]): r["bytes"] for r in o["daily"]}
    assert by_registry[(DAY1.date().isoformat(), "docker.io")] == sql(
        api, "select sum(bytes) from events where cast(ts as date) = ?", [DAY1.date()])
    assert o["in_force"]["bans"] == 1 and o["in_force"]["held"] == 0
    latest = sql(api, "select max(ts) from events")
    assert o["ingest_lag_seconds"] == (NOW - latest).total_seconds()


def test_traffic_filters_and_previous_period(api):
    start, end = DAY1.isoformat(), (DAY1 + timedelta(days=2)).isoformat()
    t = get(api, "/v1/stats/traffic", start=start, end=end, bucket="day")
    assert [s["bytes"] for s in t["series"]] == [
        sql(api, "select sum(bytes) from events where cast(ts as date) = ?", [d])
        for d in (DAY1.date(), (DAY1 + timedelta(days=1)).date())]
    assert t["totals"]["addresses"] == 3 and t["previous_totals"]["requests"] == 0
    only_ci = get(api, "/v1/stats/traffic", start=start, end=end, asn=64500)
    assert only_ci["totals"]["bytes"] == sql(api, "select sum(bytes) from events where client_ip = ?", [CI])
    assert get(api, "/v1/stats/traffic", start=start, end=end, family="podman")["totals"]["requests"] == 4
    assert get(api, "/v1/stats/traffic", start=start, end=end, country="de")["totals"]["addresses"] == 1
    assert get(api, "/v1/stats/traffic", start=start, end=end, address="198.51.100.0/24")["totals"]["addresses"] == 2
    assert get(api, "/v1/stats/traffic", start=start, end=end, address="198.51.0.0/16")["totals"]["addresses"] == 2
    assert get(api, "/v1/stats/traffic", start=start, end=end, image="docker.io/nvidia/cuda")["totals"]["pulls"] == 2
    later = get(api, "/v1/stats/traffic", start=(DAY1 + timedelta(days=1)).isoformat(), end=end)
    assert later["bucket"] == "hour"
    assert later["previous_totals"]["requests"] == sql(api, "select count(*) from events where ts < ?",
                                                       [DAY1 + timedelta(days=1)])
    bad = httpx.get(api.url + "/v1/stats/traffic", headers=api.headers("viewer"), params={"address": "nope"})
    assert bad.status_code == 422 and "neither an address nor a range" in bad.text


def test_top_talkers(api):
    top = get(api, "/v1/stats/top", by="asn", start=DAY1.isoformat())
    total = sql(api, "select sum(bytes) from events")
    assert top["total_bytes"] == total
    first = top["rows"][0]
    assert first["entity"] == "64500" and first["label"] == "AS64500 CI Cloud"
    assert first["share"] == pytest.approx(sql(api, "select sum(bytes) from events where client_ip = ?", [CI]) / total)
    # 60 pulls of the same 3 blobs: each blob 60 times
    assert first["repeat_ratio"] == 60.0 and first["pulls"] == 60
    prefixes = get(api, "/v1/stats/top", by="prefix", start=DAY1.isoformat())["rows"]
    assert prefixes[0]["entity"] == "198.51.100.0/24" and prefixes[0]["addresses"] == 2
    assert prefixes[0]["bytes_per_address"] == prefixes[0]["bytes"] // 2
    families = {r["entity"]: r["requests"] for r in get(api, "/v1/stats/top", by="family", start=DAY1.isoformat())["rows"]}
    assert families == {"docker": 240, "containerd": 4, "podman": 4}


def test_entity_with_decisions_and_allowlist(api):
    rid = api.ban("198.51.100.0/24", scope="range", hours=1)
    e = get(api, "/v1/stats/entity", kind="address", value=CI)
    assert (e["asn"], e["as_org"], e["country"]) == (64500, "CI Cloud", "US")
    assert e["totals"]["bytes"] == sql(api, "select sum(bytes) from events where client_ip = ?", [CI])
    assert sum(h["requests"] for h in e["hourly"]) == 240
    assert e["images"][0] == {"image": "docker.io/library/python", "requests": 240, "pulls": 60,
                              "bytes": e["totals"]["bytes"]}
    assert e["user_agents"][0]["family"] == "docker"
    assert rid in [d["id"] for d in e["decisions"]]          # the range it lies in
    assert e["allowlisted"] is None
    with api.services.lock:
        api.store.execute("insert into allowlist values ('cidr', '198.51.100.0/25', 'office', ?, null)", [NOW])
    assert get(api, "/v1/stats/entity", kind="address", value=CI)["allowlisted"]["reason"] == "office"
    other = get(api, "/v1/stats/entity", kind="address", value=V6)
    assert rid not in [d["id"] for d in other["decisions"]] and other["allowlisted"] is None
    assert get(api, "/v1/stats/entity", kind="asn", value="AS64501")["totals"]["requests"] == 4
    with api.services.lock:
        api.store.execute("delete from allowlist")


def test_explain_through_the_api(api):
    x = get(api, "/v1/stats/explain", target=CI)
    assert x["target"] == CI and x["entity_kind"] == "address"
    by_rule = {v["rule"]: v for v in x["verdicts"]}
    assert by_rule["tag-scanner"]["match"] is False and by_rule["tag-scanner"]["features"]["requests"] > 0
    r = httpx.get(api.url + "/v1/stats/explain", headers=api.headers("viewer"), params={"target": "10.0.0.0/8"})
    assert r.status_code == 422 and "/24" in r.text


def test_image_match_and_demand(api):
    with api.services.lock:
        api.store.execute("""insert into image_lists values ('allowed', 'docker.io/library/*', 'official', ?),
                             ('blocked', 'docker.io/secret/**', 'leaked', ?)""", [NOW, NOW])
    m = get(api, "/v1/stats/images/match", image="python:3.12")
    assert m["image"] == "docker.io/library/python" and m["allowed"] == "docker.io/library/*"
    assert m["verdict"] == "allowed"
    m = get(api, "/v1/stats/images/match", image="docker.io/secret/private")
    assert m["verdict"] == "refused" and m["why"] == "blocked by docker.io/secret/**"
    demand = get(api, "/v1/stats/demand", start=DAY1.isoformat())
    assert demand == [{"image": "docker.io/nvidia/cuda", "requests": 2, "addresses": 1,
                       "refused": "not on the allow list"},
                      {"image": "docker.io/secret/private", "requests": 2, "addresses": 1,
                       "refused": "blocked by docker.io/secret/**"}]
    assert get(api, "/v1/stats/images")["blocked"][0]["reason"] == "leaked"
    with api.services.lock:
        api.store.execute("delete from image_lists")


def test_rules_and_decision_filters(api):
    rules = {r["rule"]: r for r in get(api, "/v1/stats/rules")}
    assert "tag-scanner" in rules and rules["tag-scanner"]["pack"] == "default"
    assert rules["tag-scanner"]["findings"] == 0
    made = get(api, "/v1/stats/decisions", scope="range")
    assert made and all(d["scope"] == "range" for d in made)
    bt = get(api, "/v1/stats/backtest", start=DAY1.isoformat(), end=(DAY1 + timedelta(hours=6)).isoformat())
    assert bt["bytes"] == sql(api, "select sum(bytes) from events where ts < ?", [DAY1 + timedelta(hours=6)])
    too_long = httpx.get(api.url + "/v1/stats/backtest", headers=api.headers("viewer"),
                         params={"start": DAY1.isoformat(), "end": (DAY1 + timedelta(days=8)).isoformat()})
    assert too_long.status_code == 422


def _samples(workdir):
    """The committed nginx sample logs, ingested into the working directory's database."""
    shutil.copytree(Path(__file__).parent.parent / "sample_logs" / "nginx-main", workdir / "logs")
    run("ingest", "logs")


def run(*args, env=None):
    res = CliRunner().invoke(cli, list(args), env=env or {})
    assert res.exit_code == 0, res.output
    return res.stdout


def test_stats_and_explain_give_the_same_answer_through_a_running_server(workdir):
    """While serve holds the file, `stats` and `explain` are asked of its API (a viewer key)
    and print what they print locally."""
    _samples(workdir)
    viewer = run("keys", "create", "--role", "viewer", "--name", "dash").strip()
    local = {"stats": json.loads(run("stats", "--json")), "range": run("stats", "--from", "2024-11-20", "--to", "2024-11-21"),
             "explain": json.loads(run("explain", "203.0.113.50", "--json"))}
    assert local["stats"]["days"] and "2024-11-20" in local["range"] and "2024-11-21 " not in local["range"]
    with serving(workdir):
        env = {"PULLWARDEN_API_KEY": viewer}
        assert json.loads(run("stats", "--json", env=env)) == local["stats"]
        assert run("stats", "--from", "2024-11-20", "--to", "2024-11-21", env=env) == local["range"]
        remote = json.loads(run("explain", "203.0.113.50", "--json", env=env))
        # at the server's wall clock, like the local run: the same verdicts and numbers
        assert [(v["rule"], v["match"], v["features"]) for v in remote["verdicts"]] == \
               [(v["rule"], v["match"], {k: x for k, x in v["features"].items()}) for v in local["explain"]["verdicts"]]
        res = CliRunner().invoke(cli, ["explain", "203.0.113.50"], env={"PULLWARDEN_API_KEY": "pw_wrong"})
        assert res.exit_code == 2 and "403" in res.output and "Traceback" not in res.output


def test_every_reading_command_and_detect_work_through_a_running_server(workdir):
    """detect, prune, backtest, images list and tiers list while serve holds the file: through
    its API, with the same output as the same command run locally just before."""
    _samples(workdir)
    admin = run("keys", "create", "--role", "admin", "--name", "ops").strip()
    run("images", "add", "blocked", "docker.io/evil/*", "--reason", "malware")
    window = ("--from", "2024-11-20T10:00", "--to", "2024-11-20T14:00")
    local = {"images": run("images", "list", "--json"), "tiers": run("tiers", "list", "--json"),
             "backtest": json.loads(run("backtest", *window, "--json"))}
    with serving(workdir):
        env = {"PULLWARDEN_API_KEY": admin}
        assert run("images", "list", "--json", env=env) == local["images"]
        assert run("tiers", "list", "--json", env=env) == local["tiers"]
        remote = json.loads(run("backtest", *window, "--json", env=env))
        assert [(r["rule"], r["entities"], r["bytes"]) for r in remote["rules"]] == \
               [(r["rule"], r["entities"], r["bytes"]) for r in local["backtest"]["rules"]]
        out = json.loads(run("detect", "--json", env=env))
        assert set(out) >= {"now", "summary", "findings", "new", "held"}
        assert "findings" in run("detect", env=env)
        assert set(json.loads(run("prune", "--json", env=env))) >= {"findings", "decisions"}
        res = CliRunner().invoke(cli, ["detect"], env={"PULLWARDEN_API_KEY": "pw_nope"})
        assert res.exit_code == 2 and "403" in res.output

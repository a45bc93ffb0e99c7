"""explain's no-match side: for a rule that does not match an address, the conditions that failed,
each with its value, its threshold and how far it was, nearest first — so that an operator sees
how close a legitimate crowd came to the relay and re-pull rules (issue 21)."""
from __future__ import annotations

import json
import operator
from datetime import datetime, timezone

import pytest

from rules.nearest import describe, failing
from sample_logs.scenarios import asn_networks, generate
from tests.conftest import write
from tests.test_cli import invoke
from tests.test_enrich import build

START = datetime(2024, 11, 18)
NEW_RULES = ("cache-relay", "office-relay", "ci-repull-bytes")
CROWDS = ("ci-fleet", "campus-nat", "replicator", "cgnat")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A day of the four legitimate crowds and the cache reseller, as CRProxy logs it (no user
    agent, no forwarded-for), ingested by the CLI."""
    w = tmp_path_factory.mktemp("nearest")
    lines, actors = generate(days=1, start=START.replace(tzinfo=timezone.utc), scale=0.3,
                             kinds={*CROWDS, "cache-reseller"}, fmt="clf")
    write(w / "logs" / "access.log", lines)
    build(w / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    return w, {a.kind: a for a in actors}


@pytest.fixture
def cli_in(world, monkeypatch):
    w, actors = world
    monkeypatch.chdir(w)
    monkeypatch.setenv("PULLWARDEN_ASN_DB", str(w / "asn.mmdb"))
    monkeypatch.setenv("PULLWARDEN_FORMAT", "clf")
    monkeypatch.setenv("PULLWARDEN_NOW", "2024-11-18T23:30:00")
    if not (w / "data").exists():
        assert invoke("ingest", "logs").exit_code == 0
    return actors


def _explain(ip: str) -> dict:
    res = invoke("explain", ip, "--json")
    assert res.exit_code == 0, res.output
    return {v["rule"]: v for v in json.loads(res.stdout)["verdicts"]}


def test_each_new_rule_says_how_near_each_legitimate_crowd_came(cli_in):
    for kind in CROWDS:
        verdicts = _explain(cli_in[kind].addresses[0])
        for rule in NEW_RULES:
            v = verdicts[rule]
            assert not v["match"] and v["failing"], (kind, rule)
            assert 1 <= len(v["failing"]) <= v["conditions"]
            distances = [f["distance"] for f in v["failing"]]
            assert distances == sorted(distances), (kind, rule)
            for f in v["failing"]:
                # every condition named really fails, by the numbers it gives
                op = next(o for o in (">=", "<=", ">", "<", "=") if f" {o} " in f" {f['condition']} ")
                assert not OPS[op](f["value"], f["threshold"]), (kind, rule, f)
                assert f["distance"] == pytest.approx(abs(f["value"] - f["threshold"]) / abs(f["threshold"]))


def test_the_campus_was_not_a_cache_relay_by_its_quiet_hours(cli_in):
    """The campus is flat enough at night to come near the cache relay: explain names the quiet
    hours, with the campus's own quiet_share, as what kept it out — and says so in its text."""
    ip = cli_in["campus-nat"].addresses[0]
    v = _explain(ip)["cache-relay"]
    quiet = next(f for f in v["failing"] if f["condition"] == "quiet_share >= 0.18")
    assert quiet["value"] == pytest.approx(v["features"]["quiet_share"]) and quiet["threshold"] == 0.18
    assert 0 < quiet["distance"] < 1
    text = invoke("explain", ip).output
    assert (f"{len(v['failing'])} of {v['conditions']} conditions fail; nearest: {describe(v['failing'][0])}"
            in text)


def test_a_matched_rule_has_no_misses(cli_in):
    v = _explain(cli_in["cache-reseller"].addresses[0])["cache-relay"]
    assert v["match"] and v["failing"] == []


def test_nested_conditions_report_their_nearest_part(tmp_path):
    from core.store import open_store
    store = open_store(str(tmp_path / "x.duckdb"))
    try:
        where = "bytes >= 100 and (hosting = 1 or xff_values >= 10) and max_blob_downloads <= 2 * blob_hours"
        got = failing(store, where, {"bytes": 150, "hosting": 0, "xff_values": 8, "max_blob_downloads": 9,
                                     "blob_hours": 3})
        assert [(f["condition"], f["value"], f["threshold"]) for f in got] == [
            ("xff_values >= 10", 8, 10), ("max_blob_downloads <= 2 * blob_hours", 9, 6)]
        assert [f["distance"] for f in got] == [pytest.approx(0.2), pytest.approx(0.5)]
        assert failing(store, where, {"bytes": 150, "hosting": 1, "max_blob_downloads": 1, "blob_hours": 3}) == []
        # a `between` is cut in two by the reading of `and`: then the condition is named whole
        assert failing(store, "bytes between 1 and 2", {"bytes": 5}) == [
            {"condition": "bytes between 1 and 2", "value": None, "threshold": None, "distance": None}]
    finally:
        store.close()

"""The default pack against labelled synthetic traffic: it must catch the abusers and never ban
heavy legitimate clients; the operator's baseline, replayed beside it, bans some of those."""
from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

import pytest

from core.settings import load
from core.store import open_store
from ingest.pipeline import Ingester
from rules.backtest import backtest
from rules.detect import detect
from rules.engine import load_rules
from tests.scenarios import ABUSIVE_KINDS, asn_networks, generate
from tests.test_enrich import build

START = datetime(2024, 11, 18)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("scenarios")
    lines, actors = generate(days=2, scale=1.0)
    (w / "access.log").write_text("\n".join(lines) + "\n")
    asn = build(w / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    # a small mirror: 900 active addresses, so the breaker's share is raised to let range bans through
    cfg = load(None, {"db": str(w / "db.duckdb"), "asn_db": str(asn), "format": "main", "breaker_share": 0.25},
               environ={})
    store = open_store(cfg.db)
    report = Ingester(store, cfg).run([str(w / "access.log")])
    assert report.total("rejects") == 0
    rules = load_rules(store)
    held = []
    for h in range(12, 48, 2):                  # a detection pass every two hours of event time
        r = detect(store, cfg, rules, START + timedelta(hours=h))
        held += [r.held] if r.held else []
    yield store, cfg, rules, actors, held
    store.close()


def _owner(actors, value: str):
    """The actors a decision's value hits: the address's owner, or everyone inside a range."""
    if "/" in value:
        net = ipaddress.ip_network(value)
        return [a for a in actors if any(ipaddress.ip_address(ip) in net for ip in a.addresses)]
    return [a for a in actors if value in a.addresses]


def test_default_pack_catches_every_abuser_and_bans_no_legitimate_client(world):
    store, _cfg, _rules, actors, held = world
    assert held == []
    rows = store.execute("select value, effect, rule from decisions where not simulated")
    banned_kinds = {a.kind for value, effect, _ in rows if effect == "ban" for a in _owner(actors, value)
                    if a.abusive}
    assert banned_kinds == set(ABUSIVE_KINDS)
    wrongly = {(a.name, rule) for value, effect, rule in rows if effect == "ban"
               for a in _owner(actors, value) if not a.abusive and a.kind != "light"}
    assert wrongly == set()
    # heavy legitimate clients may be slowed down
    throttled = {a.kind for value, effect, _ in rows if effect == "throttle" for a in _owner(actors, value)}
    assert throttled <= set(ABUSIVE_KINDS) | {"office-nat", "ai-user", "harbor-cache", "hosted-ci", "k8s-cluster"}


def test_ci_storm_is_throttled_first_then_banned_when_it_goes_on(world):
    store, _cfg, _rules, actors, _ = world
    ci = next(a for a in actors if a.kind == "ci-storm")
    steps = store.execute("""select rule, effect, created_at from decisions
                             where value = ? and not simulated order by created_at""", [ci.addresses[0]])
    assert steps[0][:2] == ("ci-repull-storm", "throttle")
    ban = next(s for s in steps if s[0] == "ci-repull-recidive")
    assert ban[1] == "ban" and ban[2] >= steps[0][2] + timedelta(hours=24)


def test_rotation_is_a_range_decision(world):
    store, _cfg, _rules, actors, _ = world
    ranges = {v for (v,) in store.execute("select value from decisions where scope = 'range' and not simulated")}
    assert ranges == {a.prefix for a in actors if a.kind in ("rotation-v4", "rotation-v6")}
    privacy = next(a for a in actors if a.kind == "privacy-v6")
    assert privacy.prefix not in ranges


def test_backtest_compares_with_the_operator_baseline(world):
    store, cfg, rules, actors, _ = world
    bt = backtest(store, cfg, rules, START + timedelta(hours=24), START + timedelta(hours=48))
    kinds = {pack: {a.kind for v in p["banned"] for a in _owner(actors, v)} for pack, p in bt["packs"].items()}
    legit_heavy = {"office-nat", "k8s-cluster", "harbor-cache", "ai-user"}
    assert kinds["daocloud-baseline"] & legit_heavy          # the static thresholds ban heavy legitimate traffic
    assert not kinds["default"] & legit_heavy
    assert {"rotation-v4", "rotation-v6"} <= kinds["default"]
    assert not {"rotation-v4", "rotation-v6"} & kinds["daocloud-baseline"]   # spread thin, under every threshold

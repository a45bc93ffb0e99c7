"""Findings → decisions: allowlists win, escalation, extension, the circuit breaker, injected time."""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from core.store import open_store
from core.allowlist import revoke_allowlisted
from rules import policy
from rules.detect import detect
from rules.engine import load_rules
from tests.detect_helpers import RULE, T0, add_events, light, settings, storm


@pytest.fixture
def env(tmp_path):
    (tmp_path / "pack").mkdir(exist_ok=True)
    (tmp_path / "pack" / "storm.yml").write_text(RULE)
    store = open_store(str(tmp_path / "db.duckdb"))
    rules = load_rules(store, packs=[str(tmp_path / "pack")])
    yield store, rules
    store.close()


def decisions(store):
    return store.execute("""select scope, value, effect, rule, created_at, until, revoked_at, simulated
                            from decisions order by value, created_at""")


def test_a_storm_is_banned_with_a_reason_and_evidence(env):
    store, rules = env
    add_events(store, storm("203.0.113.7") + light("198.51.100.1"))
    result = detect(store, settings(), rules, T0 + timedelta(hours=23))
    assert [d.value for d in result.new] == ["203.0.113.7"]
    d = result.new[0]
    assert (d.scope, d.effect, d.rule, d.until - d.created_at) == ("ip", "ban", "test-storm", timedelta(hours=1))
    assert d.reason == "288 blob downloads"           # 24 hours x 4 pulls x 3 blobs
    assert d.evidence["blob_gets"] == 288 and d.evidence["requests"] == 384   # + 96 manifest GETs
    assert d.evidence["repeat_ratio"] is None        # not read by this rule, so not computed
    assert store.value("select count(*) from findings") == 1


@pytest.mark.parametrize("kind, value", [("ip", "203.0.113.7"), ("cidr", "203.0.113.0/28"), ("asn", "64500"),
                                         ("user", "ci-bot")])
def test_the_allowlist_wins(env, kind, value):
    store, rules = env
    add_events(store, [e[:3] + ("ci-bot",) + e[4:] for e in storm("203.0.113.7")])
    store.execute("insert into ip_info values ('203.0.113.7', 64500, 'EXAMPLE', 'CN')")
    store.execute("insert into allowlist values (?, ?, 'ours', ?, null)", [kind, value, T0])
    if kind == "user":
        rules = load_rules(store, packs=[])
        from rules.engine import load_file, where_checker
        import pathlib, tempfile
        d = pathlib.Path(tempfile.mkdtemp())
        (d / "u.yml").write_text(RULE.replace("entity: address", "entity: user"))
        rules = load_file(d / "u.yml", "t", where_checker(store))
    result = detect(store, settings(), rules, T0 + timedelta(hours=23))
    assert result.new == [] and len(result.allowlisted) == 1 and result.allowlisted[0][1] == "ours"
    assert decisions(store) == []


def test_a_new_allowlist_entry_revokes_matching_decisions(env):
    store, rules = env
    add_events(store, storm("203.0.113.7") + storm("203.0.113.8"))
    now = T0 + timedelta(hours=23)
    detect(store, settings(), rules, now)
    store.execute("insert into allowlist values ('cidr', '203.0.113.7/32', 'ours', ?, null)", [now])
    assert revoke_allowlisted(store, "cidr", "203.0.113.7/32", now) == 1
    rows = {r[1]: r[6] for r in decisions(store)}
    assert rows["203.0.113.7"] == now and rows["203.0.113.8"] is None


def test_repeat_offenders_get_longer_up_to_the_cap(env):
    store, rules = env
    add_events(store, storm("203.0.113.7", hours=72))
    lengths = []
    now = T0 + timedelta(hours=23)
    for _ in range(4):                        # each time after the previous ban expired
        result = detect(store, settings(), rules, now)
        d = result.new[0]
        lengths.append(d.until - d.created_at)
        now = d.until + timedelta(hours=1)
    assert lengths == [timedelta(hours=1), timedelta(hours=2), timedelta(hours=3), timedelta(hours=3)]


def test_an_active_decision_is_extended_not_repeated(env):
    store, rules = env
    add_events(store, storm("203.0.113.7", hours=30))
    first = detect(store, settings(), rules, T0 + timedelta(hours=23)).new[0]
    seq = store.value("select seq from decisions")
    second = detect(store, settings(), rules, T0 + timedelta(hours=23, minutes=30))
    assert second.new == [] and len(second.extended) == 1
    assert store.value("select count(*) from decisions") == 1
    assert store.value("select until from decisions") == first.until + timedelta(minutes=30)
    assert store.value("select seq from decisions") > seq


def test_the_circuit_breaker_holds_the_whole_pass(env):
    store, rules = env
    rows = []
    for n in range(8):                        # 8 storms among 100 addresses: 8 % > 2 %, and > floor 5
        rows += storm(f"203.0.113.{n}")
    for n in range(92):
        rows += light(f"198.51.100.{n}")
    add_events(store, rows)
    result = detect(store, settings(), rules, T0 + timedelta(hours=23))
    assert len(result.new) == 8
    assert result.held and "8 of the 100 addresses" in result.held
    assert decisions(store) == []
    assert store.value("select held from detect_runs") == result.held
    assert store.value("select count(*) from findings") == 8      # what was found is still recorded
    ok = detect(store, settings(breaker_share=0.1), rules, T0 + timedelta(hours=23))
    assert ok.held is None and len(decisions(store)) == 8


def test_a_range_wider_than_a_16_holds(env):
    store, _ = env
    from core.types import Decision
    r = policy.PassResult(T0, new=[Decision("range", "10.0.0.0/8", "ban", "x", T0, T0 + timedelta(hours=1))])
    assert "wider than /16" in policy._breaker(store, r, T0, 0.5, 1000)


def test_the_wall_clock_does_not_change_decisions(tmp_path):
    outcomes = []
    for n, clock in enumerate((lambda: 0.0, lambda: 4.0e9)):
        (tmp_path / f"p{n}").mkdir()
        (tmp_path / f"p{n}" / "s.yml").write_text(RULE)
        store = open_store(str(tmp_path / f"db{n}.duckdb"))
        add_events(store, storm("203.0.113.7") + storm("2001:db8::7") + light("198.51.100.1"))
        result = detect(store, settings(), load_rules(store, packs=[str(tmp_path / f"p{n}")]),
                        T0 + timedelta(hours=23), clock=clock)
        outcomes.append([(d.value, d.until, d.reason) for d in result.new])
        store.close()
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 2


# -- properties ----------------------------------------------------------------------------------

@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stormy=st.sets(st.integers(0, 29), min_size=1, max_size=12),
       allowed=st.sets(st.integers(0, 29), max_size=10),
       share=st.sampled_from([0.02, 0.1, 0.3]), floor=st.integers(0, 6))
def test_properties_allowlist_never_banned_and_breaker_bounds(tmp_path_factory, stormy, allowed, share, floor):
    tmp = tmp_path_factory.mktemp("prop")
    (tmp / "s.yml").write_text(RULE)
    store = open_store(str(tmp / "db.duckdb"))
    try:
        rows = []
        for n in range(30):
            rows += storm(f"203.0.113.{n}", hours=3, per_hour=12) if n in stormy else light(f"203.0.113.{n}", hour=1)
        add_events(store, rows)
        for n in allowed:
            store.execute("insert into allowlist values ('ip', ?, 'p', ?, null)", [f"203.0.113.{n}", T0])
        result = detect(store, settings(breaker_share=share, breaker_floor=floor), load_rules(store, packs=[str(tmp)]),
                        T0 + timedelta(hours=3))
        banned = {r[1] for r in decisions(store)}
        assert not banned & {f"203.0.113.{n}" for n in allowed}
        expected = {f"203.0.113.{n}" for n in stormy - allowed}
        if len(expected) > max(floor, share * 30):
            assert result.held and banned == set()
        else:
            assert result.held is None and banned == expected
    finally:
        store.close()

"""Findings → decisions: allowlists win, escalation, extension, the circuit breaker, injected time."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from core.store import open_store
from core.allowlist import revoke_allowlisted
from rules import policy
from rules.detect import detect
from rules.engine import load_rules
from core.types import Decision
from tests.detect_helpers import RULE, T0, add_events, ev, light, settings, storm


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


BROKEN = """name: broken
description: a site rule whose threshold lost a digit
entity: address
window: 24h
where: requests > 0
action: ban
duration: 1h
reason: "{requests:int} requests"
cases:
  - {expect: match, features: {requests: 1}}
  - {expect: no-match, features: {requests: 0}}
"""


def held_and_applied(store):
    return store.execute("""select rule, count(*) filter (where held is null), count(*) filter (where held is not null)
                            from decisions group by rule order by rule""")


def test_the_circuit_breaker_holds_the_rule_that_bans_too_much_and_applies_the_others(env, tmp_path):
    store, _ = env
    (tmp_path / "pack" / "broken.yml").write_text(BROKEN)
    rules = load_rules(store, packs=[str(tmp_path / "pack")])
    rows = []
    for n in range(3):                      # 3 storms among 100 addresses: within the floor of 5
        rows += storm(f"203.0.113.{n}")
    for n in range(97):
        rows += light(f"198.51.100.{n}")
    add_events(store, rows)
    now = T0 + timedelta(hours=23)
    result = detect(store, settings(), rules, now)
    assert [(h.rule, len(h.decisions)) for h in result.held] == [("broken", 100)]
    assert result.held[0].reason == ("the rule would hit 100 of the 100 addresses active in the last 24h; "
                                     "one rule may ban 5 in a pass: 2% of them, at least 5")
    assert held_and_applied(store) == [("broken", 0, 100), ("test-storm", 3, 0)]
    assert store.value("select held from detect_runs") == "broken: " + result.held[0].reason
    assert store.value("select decisions from detect_runs") == 3
    audit = store.execute("select actor, action, target, details, reason from audit")
    assert [a[:3] for a in audit] == [("breaker", "hold", "rule broken")]
    assert json.loads(audit[0][3])["decisions"] == 100 and audit[0][4] == result.held[0].reason
    assert store.value("select count(*) from findings") == 103      # what was found is still recorded

    # found again while held: extended, not repeated, and still held; no new hold, no new audit row
    later = detect(store, settings(), rules, now + timedelta(minutes=30))
    assert later.held == [] and later.new == [] and len(later.extended) == 103
    assert held_and_applied(store) == [("broken", 0, 100), ("test-storm", 3, 0)]
    assert store.value("select count(*) from decisions where until = ?", [now + timedelta(hours=1, minutes=30)]) == 103
    assert store.value("select count(*) from audit") == 1

    # with a share that lets 100 through, the rule's new bans would apply; held ones stay held until
    # an admin acts (the breaker never releases what it held)
    from enforcer.changes import approve, drop, held_ids
    ids = held_ids(store, "broken")
    assert len(ids) == 100
    assert drop(store, "test", ids[:50], "typo in the threshold", now) == 50
    assert approve(store, "test", ids[50:], "they really are abusers", now) == 50
    assert held_and_applied(store) == [("broken", 50, 50), ("test-storm", 3, 0)]
    assert store.value("select count(*) from decisions where held is null and revoked_at is null") == 53
    with pytest.raises(LookupError, match="no held decision"):
        approve(store, "test", ids[:1], "again", now)       # dropped: not held any more


def test_a_held_rule_cannot_trickle_through(env, tmp_path):
    """Bans still held from an earlier pass count with a rule's new ones."""
    store, _ = env
    (tmp_path / "pack" / "broken.yml").write_text(BROKEN)
    rules = load_rules(store, packs=[str(tmp_path / "pack")])
    add_events(store, [e for n in range(40) for e in light(f"198.51.100.{n}", hour=1)])
    now = T0 + timedelta(hours=1)
    assert len(detect(store, settings(), rules, now).held[0].decisions) == 40
    add_events(store, [e for n in range(40, 43) for e in light(f"198.51.100.{n}", start=T0 + timedelta(minutes=20),
                                                                hour=1)])
    again = detect(store, settings(), rules, now + timedelta(minutes=30))     # 3 new, within the floor alone
    assert [(h.rule, len(h.decisions)) for h in again.held] == [("broken", 3)]
    assert "the rule, with the 40 it had held before, would hit 43 of the 43" in again.held[0].reason
    assert store.value("select count(*) from decisions where held is null") == 0


def test_a_range_counts_its_collateral_not_every_address(env, tmp_path):
    store, _ = env
    (tmp_path / "pack" / "rotation.yml").write_text(
        RULE.replace("name: test-storm", "name: test-rotation").replace("entity: address", "entity: prefix"))
    rules = load_rules(store, packs=[str(tmp_path / "pack")])
    rows = []
    for n in range(12):                     # 12 addresses of one /24 taking turns at the same three blobs
        rows += storm(f"203.0.113.{n + 1}", start=T0 + timedelta(hours=2 * n), hours=2)
    for n in range(3):                      # three neighbours in that /24, each pulling something else once
        rows += [ev(T0 + timedelta(hours=5), f"203.0.113.{200 + n}", digest=f"sha256:e{n}")]
    for n in range(85):
        rows += light(f"198.51.{n}.1")
    add_events(store, rows)
    now = T0 + timedelta(hours=23)
    # 15 active addresses inside, 100 in all: counting every address would hold it (limit 5)
    result = detect(store, settings(), rules, now)
    assert result.held == [] and [(x.value, x.held) for x in result.new] == [("203.0.113.0/24", None)]
    d = Decision("range", "203.0.113.0/24", "ban", "x", now, now)
    assert policy.hits(store, [d], "24h", now) == {("range", "203.0.113.0/24"): 4}    # the rotation once + 3
    assert policy.hits(store, [Decision("asn", "64500", "ban", "x", now, now),
                               Decision("user", "nobody", "ban", "x", now, now)], "24h", now) == \
        {("asn", "64500"): 1, ("user", "nobody"): 1}          # a ban hits at least one


def test_a_range_wider_than_a_16_is_held_alone(env):
    store, _ = env
    wide = Decision("range", "10.0.0.0/8", "ban", "x", T0, T0 + timedelta(hours=1), rule="r")
    narrow = Decision("range", "10.1.2.0/24", "ban", "x", T0, T0 + timedelta(hours=1), rule="r")
    r = policy.PassResult(T0, new=[wide, narrow])
    holds = policy._breaker(store, r, [], 0.5, 1000)
    assert [(h.rule, h.decisions) for h in holds] == [("r", [wide])]
    assert "wider than /16" in wide.held and narrow.held is None


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
       allowed=st.sets(st.integers(0, 29), max_size=25),
       share=st.sampled_from([0.02, 0.1, 0.3]), floor=st.integers(0, 6))
def test_properties_no_rule_gets_more_than_its_share_and_the_allowlist_is_never_banned(
        tmp_path_factory, stormy, allowed, share, floor):
    """A storm rule and a broken rule that matches everyone, judged on their own, over two passes."""
    tmp = tmp_path_factory.mktemp("prop")
    (tmp / "s.yml").write_text(RULE)
    (tmp / "b.yml").write_text(BROKEN)
    store = open_store(str(tmp / "db.duckdb"))
    try:
        rows = []
        for n in range(30):
            rows += storm(f"203.0.113.{n}", hours=3, per_hour=12) if n in stormy else light(f"203.0.113.{n}", hour=1)
        add_events(store, rows)
        for n in allowed:
            store.execute("insert into allowlist values ('ip', ?, 'p', ?, null)", [f"203.0.113.{n}", T0])
        rules = load_rules(store, packs=[str(tmp)])
        cfg = settings(breaker_share=share, breaker_floor=floor)
        limit = max(floor, int(share * 30))
        expected = {"test-storm": {f"203.0.113.{n}" for n in stormy - allowed},
                    "broken": {f"203.0.113.{n}" for n in set(range(30)) - allowed}}
        for minutes in (0, 30):                         # the second pass finds the same: nothing changes
            detect(store, cfg, rules, T0 + timedelta(hours=3, minutes=minutes))
            for rule, want in expected.items():
                got = store.execute("select value, held from decisions where rule = ?", [rule])
                applied = {v for v, held in got if held is None}
                assert len(applied) <= limit                                  # never more than its share
                assert len(got) == len(want) and {v for v, _ in got} == want  # extended, never repeated
                assert applied == (want if len(want) <= limit else set())     # a rule is held whole, or not
            assert not {r[0] for r in store.execute("select value from decisions")} & \
                {f"203.0.113.{n}" for n in allowed}                           # not even held
    finally:
        store.close()


def test_an_unban_sticks_until_the_rules_window_holds_only_newer_evidence(env):
    """An admin's unban is not undone by the next pass from the same evidence; once the rule's
    window lies wholly after the unban, what it finds is new, and it bans again. explain says why."""
    from enforcer.changes import revoke
    from rules.explain import explain
    store, rules = env
    add_events(store, storm("203.0.113.7", hours=48))
    at = T0 + timedelta(hours=23)
    [d] = detect(store, settings(), rules, at).new
    revoke(store, "admin", d.id, "a customer's CI, they fixed it", at + timedelta(minutes=5))
    again = detect(store, settings(), rules, at + timedelta(minutes=10))
    assert again.new == [] and [f.entity for f, _ in again.unbanned] == ["203.0.113.7"]
    assert "unbanned by an admin" in again.unbanned[0][1]
    window = timedelta(hours=int(rules[0].window.rstrip("h")))
    report = explain(store, settings(), rules, "203.0.113.7", at + timedelta(minutes=10))
    assert "is not applied again before" in report["verdicts"][0]["unbanned"]
    later = detect(store, settings(), rules, at + timedelta(minutes=6) + window)
    assert [x.value for x in later.new] == ["203.0.113.7"] and later.unbanned == []

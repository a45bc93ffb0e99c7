"""The two-step judging of rules/prefilter.py: an entity left out after the cheap features is
one no rule could match; conditions whose unknowns could turn true are never used to leave one out."""
from __future__ import annotations

from datetime import timedelta

from core.settings import load
from core.store import open_store
from rules import prefilter
from rules.detect import detect
from rules.engine import load_rules
from tests.detect_helpers import add_events, ev, storm
from tests.enforcer_helpers import NOW


def test_every_shipped_condition_can_be_judged_on_the_cheap_features_first(tmp_path):
    # each shipped rule's condition passes unknowns on, so a group of them can prune
    store = open_store(str(tmp_path / "db.duckdb"))
    for rule in load_rules(store):
        assert prefilter.strict(rule.where), rule.name
    store.close()


def test_operators_that_swallow_an_unknown_keep_every_entity():
    for where in ("repeat_ratio is not null and requests > 1", "coalesce(repeat_ratio, 0) > 1",
                  "case when repeat_ratio > 1 then true else false end", "greatest(repeat_ratio, 2) > 1",
                  "requests > 1 and blobs in (1, 2)", "'a' = 'a'"):
        assert not prefilter.strict(where), where
    assert prefilter.strict("(bytes >= 200 * 1024^3 and not byte_share < 0.05) or errors between 1 and 2e3")


RULE = """name: test-{name}
description: a blob condition beside a cheap one
entity: prefix
window: 24h
where: {where}
action: ban
duration: 1h
reason: "{{repeat_ratio:.1f}}"
cases:
  - {{expect: match, features: {{requests: 90, repeat_ratio: 6, blob_gets: 60, addresses: 1}}}}
  - {{expect: no-match, features: {{requests: 90, repeat_ratio: 1, blob_gets: 60, addresses: 1}}}}
"""


def test_a_group_judged_in_two_steps_finds_what_one_step_finds(tmp_path):
    # a CI storm from a /24 (one user agent, blobs again and again) and an office /24 of many
    # light clients: the strict rule's group is judged in two steps, the other's in one (its
    # condition would be true with the blob features unknown: `is not null`); both find the storm
    (tmp_path / "rules").mkdir()
    for name, where in (("strict", "addresses >= 1 and blob_gets >= 30 and repeat_ratio >= 5"),
                        ("loose", "repeat_ratio is not null and repeat_ratio >= 5 and requests >= 1")):
        (tmp_path / "rules" / f"{name}.yml").write_text(RULE.format(name=name, where=where))
    cfg = load(None, {"db": str(tmp_path / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    rules = [r for r in load_rules(store, [str(tmp_path / "rules")]) if r.name.startswith("test-")]
    add_events(store, storm("203.0.113.7", start=NOW - timedelta(hours=12), hours=12)
               + [ev(NOW - timedelta(hours=2, minutes=k), f"198.51.100.{k}", digest=f"sha256:{k}") for k in range(40)])
    for group in ([r for r in rules if r.name == "test-strict"], [r for r in rules if r.name == "test-loose"]):
        found = detect(store, cfg, group, NOW, write=False).findings
        assert [(f.rule.name, f.entity) for f in found] == [(group[0].name, "203.0.113.0/24")]
    assert prefilter.condition([r for r in rules if r.name == "test-strict"]) is not None
    assert prefilter.condition(rules) is None
    store.close()

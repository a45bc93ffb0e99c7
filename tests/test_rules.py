"""Rules are data with their own cases (fail2ban: "every regex has a sample")."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.store import open_store
from rules.engine import PACKS, RuleError, evaluate_case, load_rules

SHIPPED = [(p.parent.name, p) for p in sorted(PACKS.glob("*/*.y*ml"))]


@pytest.fixture(scope="module")
def store():
    s = open_store(":memory:")
    yield s
    s.close()


@pytest.fixture(scope="module")
def shipped(store):
    return load_rules(store)


def test_packs_are_shipped(shipped):
    packs = {r.pack for r in shipped}
    assert packs == {"default", "daocloud-baseline"}
    assert all(r.simulate for r in shipped if r.pack == "daocloud-baseline")
    assert not any(r.simulate for r in shipped if r.pack == "default")


def test_every_rule_has_cases_that_hold(store, shipped):
    for rule in shipped:
        expects = {c["expect"] for c in rule.cases}
        assert expects == {"match", "no-match"}, f"{rule.source}: {rule.name} needs a case of each kind"
        for case in rule.cases:
            got = evaluate_case(store, rule, case["features"])
            assert got == (case["expect"] == "match"), f"{rule.name}: {case.get('note', case)}"


GOOD = """name: t
description: d
entity: address
window: 24h
where: requests > 10
action: ban
duration: 1h
reason: "{requests:int} requests"
cases:
  - {expect: match, features: {requests: 11}}
  - {expect: no-match, features: {requests: 10}}
"""


@pytest.mark.parametrize("change, line, message", [
    (("cases:", "colour: red\ncases:"), 9, "unknown key 'colour'"),
    (("requests > 10", "requets > 10"), 5, "where: .*requets"),
    (("requests > 10", "requests >> > 10"), 5, "where: .*syntax error"),
    (("requests > 10", "requests > 10; drop table events"), 5, "where: (syntax error|must be one expression)"),
    (("requests > 10", "requests > (select count(*) from events)"), 5, "where: subqueries are not allowed"),
    (("requests > 10", "requests > 10 from events"), 5, "where: (syntax error|must be one expression)"),
    (("requests > 10", "requests > 10, bytes > 5"), 5, "where: must be one boolean expression"),
    (("requests > 10", "requests + 10"), 5, "where: must be one boolean expression, not DOUBLE"),
    (("window: 24h", "window: 3d"), 4, "window must be one of"),
    (("entity: address", "entity: planet"), 3, "entity must be one of"),
    (("action: ban", "action: nuke"), 6, "action must be ban"),
    (("duration: 1h", "duration: 1 hour"), 7, "bad duration"),
    (('"{requests:int} requests"', '"{reqs} requests"'), 8, "reason names an unknown feature"),
])
def test_a_bad_rule_names_file_and_line(store, tmp_path, change, line, message):
    folder = tmp_path / "site"
    folder.mkdir()
    path = folder / "bad.yml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(RuleError, match=rf"^{path}:{line}: {message}"):
        load_rules(store, packs=[], site_dir=str(folder))


def test_invalid_yaml(store, tmp_path):
    (tmp_path / "x.yml").write_text("name: [unclosed\n")
    with pytest.raises(RuleError, match=r"x.yml:\d+: not valid YAML"):
        load_rules(store, packs=[str(tmp_path)])


def test_a_site_rule_overrides_a_shipped_one_by_name(store, tmp_path):
    shipped_text = (PACKS / "default" / "tag-scanner.yml").read_text()
    mine = GOOD.replace("name: t", "name: tag-scanner").replace("requests > 10", "requests > 99")
    (tmp_path / "mine.yml").write_text(mine.replace("requests: 11", "requests: 100"))     # its cases must hold
    rules = {r.name: r for r in load_rules(store, site_dir=str(tmp_path))}
    assert rules["tag-scanner"].where == "requests > 99" and rules["tag-scanner"].pack == "site"
    assert "reseller-proxy" in rules
    assert (PACKS / "default" / "tag-scanner.yml").read_text() == shipped_text


def test_one_name_twice_in_the_packs_is_an_error(store, tmp_path):
    for n in ("a", "b"):
        (tmp_path / f"{n}.yml").write_text(GOOD)
    with pytest.raises(RuleError, match=r"b.yml:1: rule 't' is already defined in .*a.yml"):
        load_rules(store, packs=[str(tmp_path)])


def test_unknown_pack(store):
    with pytest.raises(RuleError, match="no such rule pack"):
        load_rules(store, packs=["nope"])


def test_features_are_documented():
    from rules.features import FEATURES, markdown
    text = (Path(__file__).resolve().parents[1] / "rules" / "FEATURES.md").read_text()
    assert text == markdown(), "regenerate: python -m rules.features > rules/FEATURES.md"
    assert all(f.doc for f in FEATURES)

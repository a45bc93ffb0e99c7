"""Rules as data: YAML files with a SQL condition over the features, and their own cases.

A rule file holds one rule (or a list under `rules:`). Shipped packs live in rules/packs/<pack>/;
a site folder (setting `rules_dir`, or --rules) adds rules and overrides a shipped rule of the
same name; shipped files are never edited. Every problem names the file and the line.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from core.types import parse_duration
from rules.features import ENTITIES, NAMES, WINDOWS

PACKS = Path(__file__).parent / "packs"
RULE_ENTITIES = tuple(e for e in ENTITIES if e != "image")
_KEYS = {"name", "description", "entity", "window", "where", "action", "duration", "escalation",
         "simulate", "reason", "cases"}


class RuleError(Exception):
    """A rule that cannot be used: the message starts with file:line."""


@dataclass
class Rule:
    name: str
    description: str
    entity: str
    window: str
    where: str
    action: str                       # ban | throttle:<tier> | tag
    duration: timedelta
    reason: str
    cases: list[dict]
    source: str
    line: int
    pack: str
    simulate: bool = False
    escalation_factor: float = 1.0
    escalation_cap: timedelta | None = None
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def effect(self) -> str:
        return self.action.split(":", 1)[0]

    @property
    def tier(self) -> str | None:
        return self.action.split(":", 1)[1] if ":" in self.action else None

    def explain(self, features: dict) -> str:
        return format_reason(self.reason, features)

    @property
    def uses(self) -> set[str]:
        """The features its condition and its reason read."""
        words = set(re.findall(r"[a-z_]+", self.where))
        words |= {f.split(":")[0].split("!")[0] for _, f, _, _ in string.Formatter().parse(self.reason) if f}
        return words & set(NAMES)


class _ReasonFormatter(string.Formatter):
    """`{bytes:gib}`, `{byte_share:pct}`, `{x:int}` besides Python's own format specs."""

    def format_field(self, value, spec):
        if value is None:
            return "?"
        if spec == "gib":
            return f"{value / (1 << 30):.1f}"
        if spec == "pct":
            return f"{value * 100:.0f}%"
        if spec == "int":
            return f"{int(value)}"
        return super().format_field(value, spec)


def format_reason(template: str, features: dict) -> str:
    return _ReasonFormatter().format(template, **features)


# -- loading ---------------------------------------------------------------------------------

def _lines(node) -> dict[str, int]:
    return {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(node, yaml.MappingNode) else {}


def load_file(path: Path, pack: str, check) -> list[Rule]:
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise RuleError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: {e}") from None
    if isinstance(data, dict) and "rules" in data:
        items = data["rules"]
        nodes = next(v for k, v in root.value if k.value == "rules").value
    else:
        items, nodes = [data], [root]
    if not isinstance(items, list):
        raise RuleError(f"{path}:1: `rules` must be a list")
    return [_rule(item, node, path, pack, check) for item, node in zip(items, nodes)]


def _rule(item, node, path: Path, pack: str, check) -> Rule:
    lines = _lines(node)
    where_at = lambda key: f"{path}:{lines.get(key, node.start_mark.line + 1)}"  # noqa: E731
    if not isinstance(item, dict):
        raise RuleError(f"{path}:{node.start_mark.line + 1}: a rule must be a mapping")
    for key in item:
        if key not in _KEYS:
            raise RuleError(f"{where_at(key)}: unknown key {key!r}")
    for key in ("name", "description", "entity", "window", "where", "action", "reason"):
        if not item.get(key):
            raise RuleError(f"{path}:{node.start_mark.line + 1}: rule lacks `{key}`")
    if item["entity"] not in RULE_ENTITIES:
        raise RuleError(f"{where_at('entity')}: entity must be one of {', '.join(RULE_ENTITIES)}")
    if item["window"] not in WINDOWS:
        raise RuleError(f"{where_at('window')}: window must be one of {', '.join(WINDOWS)}")
    action = str(item["action"])
    if not re.fullmatch(r"ban|tag|throttle:[a-z0-9_-]+", action):
        raise RuleError(f"{where_at('action')}: action must be ban, throttle:<tier> or tag")
    try:
        duration = parse_duration(item.get("duration", "0s" if action == "tag" else ""))
        esc = item.get("escalation") or {}
        factor = float(esc.get("factor", 1))
        cap = parse_duration(esc["cap"]) if "cap" in esc else None
    except (ValueError, TypeError, AttributeError) as e:
        raise RuleError(f"{where_at('duration' if 'escalation' not in item else 'escalation')}: {e}") from None
    problem = check(str(item["where"]))
    if problem:
        raise RuleError(f"{where_at('where')}: where: {problem}")
    try:
        format_reason(str(item["reason"]), {n: 1 for n in NAMES})
    except (KeyError, ValueError, IndexError) as e:
        raise RuleError(f"{where_at('reason')}: reason names an unknown feature or format: {e}") from None
    cases = item.get("cases") or []
    if not isinstance(cases, list):
        raise RuleError(f"{where_at('cases')}: cases must be a list")
    for case in cases:
        unknown = set((case or {}).get("features", {})) - set(NAMES)
        if unknown or (case or {}).get("expect") not in ("match", "no-match"):
            raise RuleError(f"{where_at('cases')}: a case needs `expect: match|no-match` and known features "
                            f"(unknown: {sorted(unknown)})")
    return Rule(name=str(item["name"]), description=str(item["description"]), entity=item["entity"],
                window=item["window"], where=str(item["where"]), action=action, duration=duration,
                reason=str(item["reason"]), cases=cases, source=str(path), line=node.start_mark.line + 1,
                pack=pack, simulate=bool(item.get("simulate", False)), escalation_factor=factor,
                escalation_cap=cap, lines=lines)


def where_checker(store):
    """A function that says what is wrong with a `where` expression (None when it is fine):
    it must be one SQL expression, without subqueries, over the feature columns only."""
    store.execute("create or replace temp table feature_stub as select null::varchar as entity, "
                  + ", ".join(f"0::double as {n}" for n in NAMES) + " where false")

    def check(where: str) -> str | None:
        tree = json.loads(store.value("select json_serialize_sql($q)",
                                      {"q": f"select ({where}) from feature_stub"}))
        if tree.get("error"):
            return tree.get("error_message", "not SQL")
        stmts = tree["statements"]
        if len(stmts) != 1 or len(stmts[0]["node"].get("select_list", [])) != 1 \
                or stmts[0]["node"].get("from_table", {}).get("table_name") != "feature_stub":
            return "must be one expression"
        if '"SUBQUERY"' in json.dumps(stmts) or '"SELECT_NODE"' in json.dumps(stmts[0]["node"]["select_list"]):
            return "subqueries are not allowed"
        try:
            kind = store.execute(f"describe select ({where}) as v from feature_stub")[0][1]
        except Exception as e:  # duckdb's binder and parser errors say which column or token
            return str(e).split("\n")[0]
        return None if kind == "BOOLEAN" else f"must be one boolean expression, not {kind}"
    return check


def load_rules(store, packs: list[str] | None = None, site_dir: str | None = None) -> list[Rule]:
    """Shipped packs (all by default), then the site folder's rules, which replace a shipped
    rule with the same name."""
    check = where_checker(store)
    rules: dict[str, Rule] = {}
    names = packs if packs is not None else sorted(p.name for p in PACKS.iterdir() if p.is_dir())
    for pack in names:
        folder = Path(pack) if Path(pack).is_dir() else PACKS / pack
        if not folder.is_dir():
            raise RuleError(f"{pack}: no such rule pack or folder (packs: "
                            f"{', '.join(sorted(p.name for p in PACKS.iterdir() if p.is_dir()))})")
        for path in sorted(folder.glob("*.y*ml")):
            for rule in load_file(path, folder.name, check):
                if rule.name in rules and rules[rule.name].pack != "site":
                    raise RuleError(f"{path}:{rule.line}: rule {rule.name!r} is already defined in "
                                    f"{rules[rule.name].source}")
                rules[rule.name] = rule
    if site_dir:
        folder = Path(site_dir)
        if not folder.is_dir():
            raise RuleError(f"{site_dir}: no such rules folder")
        for path in sorted(folder.glob("*.y*ml")):
            for rule in load_file(path, "site", check):
                rules[rule.name] = rule
    return list(rules.values())


def evaluate_case(store, rule: Rule, features: dict) -> bool:
    """Does the rule match an entity with these features (the others 0)?"""
    values = {n: float(features.get(n, 0) or 0) for n in NAMES}
    cols = ", ".join(f"${n}::double as {n}" for n in NAMES)
    return bool(store.value(f"select ({rule.where})::boolean from (select {cols})", values))

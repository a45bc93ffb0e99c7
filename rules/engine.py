"""Rules as data: YAML files with a SQL condition over the features, and their own cases.

A rule file holds one rule (or a list under `rules:`). Shipped packs live in rules/packs/<pack>/;
a site folder (setting `rules_dir`, or --rules) adds rules and overrides a shipped rule of the
same name; shipped files are never edited. A rule is checked whole when it is loaded — its
condition, tier and reason (rules/validate.py) and its cases, which must hold — and every
problem is one line naming the file and the line.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from core.types import parse_duration
from rules.features import ENTITIES, NAMES, WINDOWS
from rules.validate import Checker

PACKS = Path(__file__).parent / "packs"
RULE_ENTITIES = tuple(e for e in ENTITIES if e != "image")
_KEYS = {"name", "description", "entity", "window", "where", "action", "duration", "escalation",
         "simulate", "reason", "cases"}


class RuleError(Exception):
    """A rule that cannot be used: one line that starts with file:line."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.splitlines()))    # a YAML note or a DuckDB error may span lines


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
    case_lines: list[int] = field(default_factory=list)

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
        words = set(re.findall(r"[a-z_]+", self.where.lower()))    # SQL names ignore case
        words |= {f.split(":")[0].split("!")[0] for _, f, _, _ in string.Formatter().parse(self.reason) if f}
        return words & set(NAMES)


# What a reason may write after a feature's name: nothing, `:gib`, `:pct`, `:int`, or fixed
# decimals (`{repeat_ratio:.1f}`). A reason is a template over the features and nothing
# else: Python's format strings also reach attributes and items (`{x.__class__}`), which a rule
# file, written by whoever can write the site folder, must not.
FORMATS = {"gib": lambda v: f"{v / (1 << 30):.1f}", "pct": lambda v: f"{v * 100:.0f}%",
           "int": lambda v: f"{int(v)}"}
FIXED = re.compile(r"\.[0-3]f")


class _ReasonFormatter(string.Formatter):
    def format_field(self, value, spec):
        if value is None:
            return "?"
        if spec in FORMATS:
            return FORMATS[spec](value)
        if FIXED.fullmatch(spec):
            return format(float(value), spec)
        return super().format_field(value, spec)


def format_reason(template: str, features: dict) -> str:
    return _ReasonFormatter().format(template, **features)


def reason_problem(template: str) -> str | None:
    """What is wrong with a reason template (None when it is fine): only `{feature}` and
    `{feature:format}`."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        return f"reason is not a template: {e} (write {{{{ and }}}} for a brace)"
    for name, spec, conv in fields:
        field = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        if not re.fullmatch(r"[a-z_]+", name):
            return f"reason names an unknown feature: {field} (only {{feature}} or {{feature:format}})"
        if name not in NAMES:
            return f"reason names an unknown feature: {field} (rules/FEATURES.md lists them)"
        if conv:
            return f"reason converts a feature: {field} (only {{feature}} or {{feature:format}})"
        if spec and spec not in FORMATS and not FIXED.fullmatch(spec):
            return f"reason uses an unknown format: {field} (formats: {', '.join(FORMATS)}, .0f to .3f)"
    return None


# -- loading ---------------------------------------------------------------------------------

# libyaml when it is there: parsing is most of the time a load takes (a tenth with it).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(path: Path):
    """A rule file's YAML as (data, node). A file that is not one is one line naming it."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RuleError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RuleError(f"{path}: not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})") from None
    if "\0" in text:
        raise RuleError(f"{path}:{text.count(chr(10), 0, text.index(chr(0))) + 1}: not UTF-8 text (a NUL byte)")
    if not text.strip():
        raise RuleError(f"{path}: empty file")
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else text.count("\n", 0, getattr(e, "position", 0)) + 1
        problem = getattr(e, "problem", None) or str(e).split("\n")[0]
        context_mark = getattr(e, "context_mark", None)
        context = (f" ({e.context}" + (f" at line {context_mark.line + 1}" if context_mark else "") + ")"
                   if getattr(e, "context", None) else "")
        raise RuleError(f"{path}:{line}: not valid YAML: {problem}{context}") from None
    except RecursionError:
        raise RuleError(f"{path}: not a rule file: nested too deeply") from None
    finally:
        loader.dispose()
    if root is None:
        raise RuleError(f"{path}: empty file (only comments)")
    if not isinstance(data, dict):
        raise RuleError(f"{path}:{root.start_mark.line + 1}: not a YAML mapping: a rule is `name: ...`, "
                        "`where: ...` and so on, several rules a list under `rules:`")
    return data, root


def _lines(node, path: Path) -> dict[str, int]:
    """Each key's line; a key given twice is an error, since YAML would silently keep the last."""
    lines: dict[str, int] = {}
    for k, _ in node.value if isinstance(node, yaml.MappingNode) else []:
        if k.value in lines:
            raise RuleError(f"{path}:{k.start_mark.line + 1}: {k.value!r} is given twice "
                            f"(first at line {lines[k.value]})")
        lines[k.value] = k.start_mark.line + 1
    return lines


def load_file(path: Path, pack: str, check: Checker) -> list[Rule]:
    rules = _read(path, pack, check)
    _verify(check, rules)
    return rules


def _read(path: Path, pack: str, check: Checker) -> list[Rule]:
    """A file's rules, each checked except for its cases' verdicts (see _verify)."""
    data, root = _parse(path)
    if "rules" in data:
        lines = _lines(root, path)
        other = [k for k in data if k != "rules"]
        if other:
            raise RuleError(f"{path}:{lines.get(str(other[0]), 1)}: unknown key {other[0]!r} beside `rules`")
        items = data["rules"]
        node = next(v for k, v in root.value if k.value == "rules")
        if not isinstance(items, list):
            raise RuleError(f"{path}:{lines['rules']}: `rules` must be a list")
        nodes = node.value
    else:
        items, nodes = [data], [root]
    return [_rule(item, node, path, pack, check) for item, node in zip(items, nodes)]


def _rule(item, node, path: Path, pack: str, check: Checker) -> Rule:
    line = node.start_mark.line + 1
    if not isinstance(item, dict):
        raise RuleError(f"{path}:{line}: a rule must be a mapping")
    lines = _lines(node, path)
    where_at = lambda key: f"{path}:{lines.get(key, line)}"  # noqa: E731
    for key in item:
        if key not in _KEYS:
            raise RuleError(f"{where_at(key)}: unknown key {key!r}")
    for key in ("name", "description", "entity", "window", "where", "action", "reason"):
        if not item.get(key):
            raise RuleError(f"{path}:{line}: rule lacks `{key}`")
    if item["entity"] not in RULE_ENTITIES:
        raise RuleError(f"{where_at('entity')}: entity must be one of {', '.join(RULE_ENTITIES)}")
    if not isinstance(item["window"], str) or item["window"] not in WINDOWS:
        raise RuleError(f"{where_at('window')}: window must be one of {', '.join(WINDOWS)}")
    action = str(item["action"])
    if not re.fullmatch(r"ban|tag|throttle:[a-z0-9_-]+", action):
        raise RuleError(f"{where_at('action')}: action must be ban, throttle:<tier> or tag")
    problem = check.tier(action.split(":", 1)[1]) if action.startswith("throttle:") else None
    if problem:
        raise RuleError(f"{where_at('action')}: action: {problem}")
    if not isinstance(item.get("simulate", False), bool):
        raise RuleError(f"{where_at('simulate')}: simulate must be true or false")
    esc = item.get("escalation") or {}
    if not isinstance(esc, dict) or set(esc) - {"factor", "cap"}:
        raise RuleError(f"{where_at('escalation')}: escalation is {{factor: N, cap: DURATION}}")
    try:
        duration = parse_duration(item.get("duration", "0s" if action == "tag" else ""))
    except (ValueError, TypeError, AttributeError) as e:
        raise RuleError(f"{where_at('duration')}: {e}") from None
    try:
        factor = float(esc.get("factor", 1))
        cap = parse_duration(esc["cap"]) if "cap" in esc else None
    except (ValueError, TypeError, AttributeError) as e:
        raise RuleError(f"{where_at('escalation')}: escalation: {e}") from None
    where = str(item["where"])
    problem = check.where(where)
    if problem:
        raise RuleError(f"{where_at('where')}: where: {problem}")
    problem = reason_problem(str(item["reason"]))
    if problem:
        raise RuleError(f"{where_at('reason')}: {problem}")
    cases, case_lines = _cases(item, node, path, where_at)
    return Rule(name=str(item["name"]), description=str(item["description"]), entity=item["entity"],
                window=item["window"], where=where, action=action, duration=duration,
                reason=str(item["reason"]), cases=cases, source=str(path), line=line,
                pack=pack, simulate=item.get("simulate", False), escalation_factor=factor,
                escalation_cap=cap, lines=lines, case_lines=case_lines)


def _cases(item: dict, node, path: Path, where_at) -> tuple[list[dict], list[int]]:
    """The rule's cases, each well formed, and at least one of each kind; with their lines."""
    cases = item.get("cases") or []
    if not isinstance(cases, list):
        raise RuleError(f"{where_at('cases')}: cases must be a list")
    lines = [n.start_mark.line + 1 for n in next((v.value for k, v in node.value if k.value == "cases"), [])]
    for case, line in zip(cases, lines):
        features = case.get("features") if isinstance(case, dict) else None
        if not isinstance(features, dict) or set(case) - {"expect", "features", "note"} \
                or case.get("expect") not in ("match", "no-match"):
            raise RuleError(f"{path}:{line}: a case is {{expect: match|no-match, features: {{feature: number, ...}}, "
                            "note: why}")
        unknown = set(features) - set(NAMES)
        if unknown:
            raise RuleError(f"{path}:{line}: a case needs known features (unknown: {sorted(unknown)})")
        for name, value in features.items():
            try:
                float(value or 0)
            except (TypeError, ValueError):
                raise RuleError(f"{path}:{line}: case feature {name} is {value!r}, not a number") from None
    kinds = {c["expect"] for c in cases}
    if kinds != {"match", "no-match"}:
        missing = " and ".join(f"`expect: {k}`" for k in ("match", "no-match") if k not in kinds)
        raise RuleError(f"{where_at('cases')}: rule {item['name']!r} needs a case of each kind; "
                        f"it has no {missing} case")
    return cases, lines


def _verify(check: Checker, rules: list[Rule]) -> None:
    """Every case true of its rule: a rule that contradicts its own samples never runs."""
    for rule, verdicts in zip(rules, check.verdicts([(r.where, r.cases) for r in rules])):
        for case, line, got in zip(rule.cases, rule.case_lines, verdicts):
            note = f": {' '.join(str(case['note']).split())}" if case.get("note") else f" {case['features']}"
            if isinstance(got, str):
                raise RuleError(f"{rule.source}:{line}: case{note}: the condition fails on it: {got}")
            if got != (case["expect"] == "match"):
                verdict = "does not match it" if got is False else "matches it"
                raise RuleError(f"{rule.source}:{line}: case expects {case['expect']}, "
                                f"but rule {rule.name!r} {verdict}{note}")


def where_checker(store) -> Checker:
    """The checks of one load against ``store`` (the name from when it checked only `where`)."""
    return Checker(store)


def load_rules(store, packs: list[str] | None = None, site_dir: str | None = None) -> list[Rule]:
    """Shipped packs (all by default), then the site folder's rules, which replace a shipped
    rule with the same name."""
    check = Checker(store)
    rules: dict[str, Rule] = {}
    names = packs if packs is not None else sorted(p.name for p in PACKS.iterdir() if p.is_dir())
    for pack in names:
        folder = Path(pack) if Path(pack).is_dir() else PACKS / pack
        if not folder.is_dir():
            raise RuleError(f"{pack}: no such rule pack or folder (packs: "
                            f"{', '.join(sorted(p.name for p in PACKS.iterdir() if p.is_dir()))})")
        for path in sorted(folder.glob("*.y*ml")):
            for rule in _read(path, folder.name, check):
                if rule.name in rules and rules[rule.name].pack != "site":
                    raise RuleError(f"{path}:{rule.line}: rule {rule.name!r} is already defined in "
                                    f"{rules[rule.name].source}")
                rules[rule.name] = rule
    if site_dir:
        folder = Path(site_dir)
        if not folder.is_dir():
            raise RuleError(f"{site_dir}: no such rules folder")
        for path in sorted(folder.glob("*.y*ml")):
            for rule in _read(path, "site", check):
                if rule.name in rules and rules[rule.name].pack == "site":
                    raise RuleError(f"{path}:{rule.line}: rule {rule.name!r} is already defined in "
                                    f"{rules[rule.name].source}")
                rules[rule.name] = rule
    _verify(check, list(rules.values()))
    return list(rules.values())


def evaluate_case(store, rule: Rule, features: dict) -> bool:
    """Does the rule match an entity with these features (the others 0)?"""
    values = {n: float(features.get(n, 0) or 0) for n in NAMES}
    cols = ", ".join(f"${n}::double as {n}" for n in NAMES)
    return bool(store.value(f"select ({rule.where})::boolean from (select {cols})", values))

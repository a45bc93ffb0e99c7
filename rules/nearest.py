"""How close a rule came: for an entity a rule did not match, the conditions of its `where` that
failed, each with its value, its threshold and how far it was from it, nearest first — the
no-match side of `explain` (an office NAT 'not a relay: quiet_share 0.14 where 0.18 is needed').

A condition is a comparison (`quiet_share >= 0.18`, `max_blob_downloads <= 2 * blob_hours`) or
anything else SQL says is true or false; `and` and `or` are followed at any depth of parentheses.
The distance of a failed comparison is |value - threshold| ÷ |threshold|: 0.22 is 22 % short."""
from __future__ import annotations

import re

import duckdb

from rules.features import NAMES

_TOKEN = re.compile(r"(\(|\)|\band\b|\bor\b)", re.IGNORECASE)
_CMP = re.compile(r"(>=|<=|<>|!=|>|<|=)")


def _split(expr: str, word: str) -> list[str]:
    """``expr``'s parts joined by ``word`` (and / or) outside parentheses."""
    parts, depth, current = [], 0, ""
    for tok in _TOKEN.split(expr):
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0 and tok.lower() == word:
            parts.append(current)
            current = ""
            continue
        current += tok
    return [p.strip() for p in parts + [current]]


def _strip(expr: str) -> str:
    """Without parentheses that enclose all of it."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, c in enumerate(expr):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


def _tree(expr: str):
    expr = _strip(expr)
    for word in ("or", "and"):
        parts = _split(expr, word)
        if len(parts) > 1:
            return (word, [_tree(p) for p in parts])
    pieces = _CMP.split(expr)
    if len(pieces) == 3 and all(p.count("(") == p.count(")") for p in pieces):    # one comparison
        return ("cmp", expr, pieces[0].strip(), pieces[1], pieces[2].strip())
    return ("leaf", expr)


def _leaves(node, out: list[str]) -> None:
    if node[0] in ("or", "and"):
        for child in node[1]:
            _leaves(child, out)
    elif node[0] == "cmp":
        out += [f"({node[1]})::boolean", f"({node[2]})::double", f"({node[4]})::double"]
    else:
        out.append(f"({node[1]})::boolean")


def _judge(node, value: dict):
    """(holds, distance, the condition nearest to holding) of a node."""
    if node[0] in ("or", "and"):
        results = [_judge(child, value) for child in node[1]]
        failed = [r for r in results if not r[0]]
        if node[0] == "or":
            if len(failed) < len(results):
                return True, 0.0, None
            return min(failed, key=lambda r: (r[1] is None, r[1] or 0))
        if not failed:
            return True, 0.0, None
        # all of them must hold: as far as the farthest of those that fail
        if any(r[1] is None for r in failed):
            return False, None, failed[0][2]
        return max(failed, key=lambda r: r[1])
    if node[0] == "cmp":
        holds = bool(value[f"({node[1]})::boolean"])
        lhs, rhs = value[f"({node[2]})::double"], value[f"({node[4]})::double"]
        distance = None if holds or lhs is None or rhs is None else abs(lhs - rhs) / (abs(rhs) or 1.0)
        return holds, 0.0 if holds else distance, {"condition": node[1], "value": lhs, "threshold": rhs,
                                                   "distance": distance}
    holds = bool(value[f"({node[1]})::boolean"])
    return holds, 0.0 if holds else None, {"condition": node[1], "value": None, "threshold": None, "distance": None}


def conditions(where: str) -> int:
    """How many conditions ``where`` joins with a top-level `and`."""
    return len(_split(_strip(where), "and"))


def failing(store, where: str, features: dict) -> list[dict]:
    """The top-level conditions of ``where`` that ``features`` fail, nearest first (those whose
    distance cannot be told last): [{condition, value, threshold, distance}]."""
    conditions = [_tree(c) for c in _split(_strip(where), "and")]
    exprs: list[str] = []
    for node in conditions:
        _leaves(node, exprs)
    exprs = list(dict.fromkeys(exprs))
    cols = ", ".join(f"${n}::double as {n}" for n in NAMES)
    params = {n: (None if features.get(n) is None else float(features[n])) for n in NAMES}
    try:
        row = store.execute(f"select {', '.join(exprs)} from (select {cols})", params)[0]
    except duckdb.Error:
        # a condition this reading splits wrongly (`x between 1 and 2` is one): the whole of it
        return [{"condition": " ".join(where.split()), "value": None, "threshold": None, "distance": None}]
    value = dict(zip(exprs, row))
    out = []
    for node in conditions:
        holds, distance, nearest = _judge(node, value)
        if not holds:
            out.append({**nearest, "distance": distance})
    return sorted(out, key=lambda f: (f["distance"] is None, f["distance"] or 0))


def describe(fail: dict) -> str:
    """One failed condition as a sentence part: `quiet_share >= 0.18 (0.14 against 0.18: 22% away)`."""
    if fail["value"] is None or fail["distance"] is None:
        return f"{fail['condition']} (false)"
    return f"{fail['condition']} ({fail['value']:.4g} against {fail['threshold']:.4g}: {fail['distance']:.0%} away)"

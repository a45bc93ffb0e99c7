"""How close a rule came: for an entity a rule did not match, the conditions of its `where` that
failed, each with its value, its threshold and how far it was from it, nearest first — the
no-match side of `explain` (an office NAT 'not a relay: quiet_share 0.14 where 0.18 is needed').

A condition is a comparison (`quiet_share >= 0.18`, `max_blob_downloads <= 2 * blob_hours`) or
anything else SQL says is true or false; `and` and `or` are followed at any depth of parentheses.
The distance of a failed comparison is |value - threshold| ÷ |threshold|: 0.22 is 22 % short.

The structure comes from DuckDB's own parse tree, as rules/validate.py reads it: an `and` inside
a string, a `between`, a `case` or a function's arguments is never taken for a conjunction. The
text each condition is named by is its own span of the rule's `where`, found with DuckDB's
tokenizer (a string literal is one token) between the tree's located nodes."""
from __future__ import annotations

import bisect

import duckdb

from rules.features import NAMES
from rules.validate import STUB, nodes, statement

OFFSET = STUB.index("{}")           # where the rule's text starts in the parsed statement
COMPARISONS = {"COMPARE_EQUAL", "COMPARE_NOTEQUAL", "COMPARE_LESSTHAN", "COMPARE_GREATERTHAN",
               "COMPARE_LESSTHANOREQUALTO", "COMPARE_GREATERTHANOREQUALTO"}
COMPARE_TOKENS = {"=", "==", "<>", "!=", "<", ">", "<=", ">="}


class Unreadable(Exception):
    """The parse tree and the text do not line up as expected: the condition is named whole."""


class _Source:
    """A `where`'s tokens, with comments left out, and the token spans of its parse tree's nodes."""

    def __init__(self, where: str):
        self.where = where
        found = duckdb.tokenize(where)
        ends = [p for p, _ in found[1:]] + [len(where)]
        kept = [(p, where[p:e].rstrip()) for (p, kind), e in zip(found, ends) if kind.name != "comment"]
        self.starts = [p for p, _ in kept]
        self.tokens = [t for _, t in kept]

    def located(self, node: dict) -> tuple[int, int]:
        """The first and last token a node of the tree or its parts were located at (the text
        between them is the node's, and so may be a trailing `)`, `end` or type name after)."""
        at = [n["query_location"] - OFFSET for n in nodes(node)
              if isinstance(n.get("query_location"), int) and 0 <= n["query_location"] - OFFSET < len(self.where)]
        if not at:
            raise Unreadable
        return bisect.bisect_right(self.starts, min(at)) - 1, bisect.bisect_right(self.starts, max(at)) - 1

    def text(self, a: int, b: int) -> str:
        return self.where[self.starts[a]:self.starts[b] + len(self.tokens[b])]

    def bare(self, a: int, b: int) -> tuple[int, int]:
        """The span [a, b] without parentheses that belong to its neighbours (a group the parse
        tree flattened: `(x and y) and z` is one `and` of three) or enclose all of it."""
        opened, pairs, closed = [], {}, []
        for i in range(a, b + 1):
            if self.tokens[i] == "(":
                opened.append(i)
            elif self.tokens[i] == ")":
                if opened:
                    pairs[opened.pop()] = i
                else:
                    closed.append(i)
        if opened != list(range(a, a + len(opened))) or closed != list(range(b - len(closed) + 1, b + 1)):
            raise Unreadable
        a, b = a + len(opened), b - len(closed)
        while a < b and pairs.get(a) == b:
            a, b = a + 1, b - 1
        if a > b:
            raise Unreadable
        return a, b

    def between(self, left: dict, right: dict, words: set[str]) -> int | None:
        """The token of ``words`` that joins two neighbouring nodes: the last one after the left
        one's last located token and before the right one's first (a `between`'s own `and` lies
        before its last bound, inside the left node)."""
        lo, hi = self.located(left)[1], self.located(right)[0]
        return next((i for i in range(hi - 1, lo, -1) if self.tokens[i].lower() in words), None)


def _tree(src: _Source, node: dict, a: int, b: int):
    """A node whose text is the tokens [a, b]: ('and' | 'or', children), ('cmp', text, left,
    operator, right) or ('leaf', text)."""
    if node["class"] == "CONJUNCTION" and node["type"] in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
        word = "and" if node["type"] == "CONJUNCTION_AND" else "or"
        children, spans, start = node["children"], [], a
        for left, right in zip(children, children[1:]):
            k = src.between(left, right, {word})
            if k is None:
                raise Unreadable
            spans.append((start, k - 1))
            start = k + 1
        spans.append((start, b))
        return word, [_tree(src, child, *src.bare(*span)) for child, span in zip(children, spans)]
    if node["class"] == "COMPARISON" and node["type"] in COMPARISONS:
        k = src.between(node["left"], node["right"], COMPARE_TOKENS)
        if k is not None and a < k < b:
            return "cmp", src.text(a, b), src.text(*src.bare(a, k - 1)), src.tokens[k], src.text(*src.bare(k + 1, b))
    return "leaf", src.text(a, b)


def _read(store, where: str) -> list:
    """``where``'s top-level conditions (those it joins with `and`), each a tree (see _tree)."""
    node = statement(store, STUB.format(where))
    if isinstance(node, str) or len(node.get("select_list") or []) != 1:
        raise Unreadable
    src = _Source(where)
    if not src.tokens:
        raise Unreadable
    top = _tree(src, node["select_list"][0], *src.bare(0, len(src.tokens) - 1))
    return top[1] if top[0] == "and" else [top]


def _whole(where: str) -> list:
    return [("leaf", " ".join(where.split()))]


def _conditions(store, where: str) -> list:
    try:
        return _read(store, where)
    except (Unreadable, RecursionError):
        return _whole(where)


def _leaves(node, out: list[str]) -> None:
    if node[0] in ("or", "and"):
        for child in node[1]:
            _leaves(child, out)
    elif node[0] == "cmp":      # a comparison of text has no distance
        out += [f"({node[1]})::boolean", f"try_cast(({node[2]}) as double)", f"try_cast(({node[4]}) as double)"]
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
        lhs, rhs = value[f"try_cast(({node[2]}) as double)"], value[f"try_cast(({node[4]}) as double)"]
        distance = None if holds or lhs is None or rhs is None else abs(lhs - rhs) / (abs(rhs) or 1.0)
        return holds, 0.0 if holds else distance, {"condition": node[1], "value": lhs, "threshold": rhs,
                                                   "distance": distance}
    holds = bool(value[f"({node[1]})::boolean"])
    return holds, 0.0 if holds else None, {"condition": node[1], "value": None, "threshold": None, "distance": None}


def conditions(store, where: str) -> int:
    """How many conditions ``where`` joins with a top-level `and`."""
    return len(_conditions(store, where))


def failing(store, where: str, features: dict) -> list[dict]:
    """The top-level conditions of ``where`` that ``features`` fail, nearest first (those whose
    distance cannot be told last): [{condition, value, threshold, distance}]."""
    found = _conditions(store, where)
    exprs: list[str] = []
    for node in found:
        _leaves(node, exprs)
    exprs = list(dict.fromkeys(exprs))
    cols = ", ".join(f"${n}::double as {n}" for n in NAMES)
    params = {n: (None if features.get(n) is None else float(features[n])) for n in NAMES}
    try:
        row = store.execute(f"select {', '.join(exprs)} from (select {cols})", params)[0]
    except duckdb.Error:
        # a condition read wrongly after all (or one that fails to evaluate): the whole of it
        return [{"condition": " ".join(where.split()), "value": None, "threshold": None, "distance": None}]
    value = dict(zip(exprs, row))
    out = []
    for node in found:
        holds, distance, nearest = _judge(node, value)
        if not holds:
            out.append({**nearest, "distance": distance})
    return sorted(out, key=lambda f: (f["distance"] is None, f["distance"] or 0))


def describe(fail: dict) -> str:
    """One failed condition as a sentence part: `quiet_share >= 0.18 (0.14 against 0.18: 22% away)`."""
    if fail["value"] is None or fail["distance"] is None:
        return f"{fail['condition']} (false)"
    return f"{fail['condition']} ({fail['value']:.4g} against {fail['threshold']:.4g}: {fail['distance']:.0%} away)"

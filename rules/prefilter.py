"""Which entities a group's rules could match, judged from the features that are cheap to compute.

The blob features read blob_hourly, the largest rollup (five rows for each of facts_hourly's):
in a pass over a week of 15 M events the prefix group's blob part was 70% of its cost, spent on
busy /24s that rotation-range's other conditions (one user agent, eight addresses) already rule
out. So a group whose rules all have conditions on cheap features is judged in two steps: the
cheap features of every entity, then every feature of the entities some rule could still match.

A rule's condition is evaluated in the first step with the features not yet computed as null.
SQL's three-valued logic is sound for that: when a condition built from comparisons, arithmetic,
and/or/not is false with some values unknown, it is false whatever those values are. That holds
only for operators that pass an unknown on (a null in gives a null out): a condition with
anything else (coalesce, case, is null, a function) keeps every entity (``condition`` None).
The same test tells a fresh pass whom a mirror-wide share moved (rules/changed.py).
"""
from __future__ import annotations

import re

from rules import features

# Features the first step computes: all but the blob parts' (and what reads them).
EXPENSIVE = {n for p in ("blob", "redownload") for n in features._PARTS[p][0]}
CHEAP = set(features.NAMES) - EXPENSIVE

_WORDS = {"and", "or", "not", "between"}
_TOKEN = re.compile(r"\s*(?:([a-z_][a-z_0-9]*)|(\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(<=|>=|<>|!=|[-+*/^%()<>=]))", re.I)


def strict(where: str) -> bool:
    """Whether every word of ``where`` is a feature, a number, and/or/not/between or an
    arithmetic or comparison operator: operators for which an unknown input gives an unknown
    result."""
    pos = 0
    while pos < len(where.rstrip()):
        m = _TOKEN.match(where, pos)
        if not m or m.end() == pos:
            return False
        word = m.group(1)
        if word is not None and word.lower() not in _WORDS and word.lower() not in features.NAMES:
            return False
        pos = m.end()
    return True


def condition(rules) -> str | None:
    """SQL true for the entities that one of ``rules`` could match, over a features row where
    only CHEAP features are computed; None when that would keep every entity (a rule without
    a cheap feature, or one whose condition is not strict)."""
    if not rules or any(not strict(r.where) or not (reads(r.where) & CHEAP) for r in rules):
        return None
    return "(" + " or ".join(f"({r.where})" for r in rules) + ") is not false"


def reads(where: str) -> set[str]:
    """The features a condition reads."""
    return set(re.findall(r"[a-z_]+", where.lower())) & set(features.NAMES)


def cheap_needed(rules, core) -> set[str]:
    """The cheap features the first step computes for ``rules``."""
    return (set().union(*(r.uses for r in rules)) | set(core)) & CHEAP

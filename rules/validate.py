"""What a rule may say, checked when it is loaded, against the store it will run in: its `where`
a pure expression over the features, its tier one the store knows, its cases true of it."""
from __future__ import annotations

import difflib
import json

import duckdb

from rules.features import NAMES

# A condition runs every pass, for every entity, inside detection's transaction: it may compute
# with the numbers, never read or change anything, and gives the same verdict for the same
# numbers. So what it may call is an allowlist (DuckDB has hundreds of functions, and new ones
# with each release: nextval, read_csv, getenv, random, ...), checked on DuckDB's own parse tree.
FUNCTIONS = {
    "+", "-", "*", "/", "//", "%", "^", "**",
    "abs", "sign", "round", "floor", "ceil", "ceiling", "trunc", "sqrt", "cbrt", "exp", "ln", "log", "log2",
    "log10", "pow", "power", "greatest", "least", "nullif", "if", "isnan", "isinf", "isfinite",
    "~~", "!~~", "~~*", "!~~*", "regexp_matches", "regexp_full_match",      # like, not like, ilike, similar to
}
OPERATORS = {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN",
             "OPERATOR_COALESCE"}
CASTS = {"DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC", "INTEGER", "INT", "BIGINT", "SMALLINT", "HUGEINT",
         "BOOLEAN", "BOOL", "VARCHAR"}
PLAIN = {"CONJUNCTION", "COMPARISON", "BETWEEN", "CASE", "CONSTANT"}
REFUSED = {"SUBQUERY": "subqueries are not allowed", "WINDOW": "window functions are not allowed",
           "STAR": "* and COLUMNS() are not allowed", "PARAMETER": "parameters are not allowed",
           "LAMBDA": "lambdas are not allowed", "COLLATE": "COLLATE is not allowed"}
ALLOWED = ", ".join(sorted(f for f in FUNCTIONS if f[0].isalpha()))


def _function(node: dict) -> str | None:
    name = node.get("function_name", "")
    path = ".".join(p for p in (node.get("catalog"), node.get("schema"), name) if p)
    if name.lower() not in FUNCTIONS or path != name:
        what = f"operator {name}" if node.get("is_operator") else f"{path}()"
        return (f"{what} is not allowed: a condition only computes with the features "
                f"(arithmetic, comparisons, and, or, not, in, between, case, cast, coalesce, like, {ALLOWED})")
    if node.get("filter") or node.get("distinct") or node.get("export_state") \
            or (node.get("order_bys") or {}).get("orders"):
        return f"{name}() takes no FILTER, DISTINCT or ORDER BY"
    return None


def _refused(node: dict) -> str | None:
    """What is wrong with one node of the parse tree, or None."""
    kind = node["class"]
    if kind in PLAIN:
        return None
    if kind == "COLUMN_REF":
        names = node.get("column_names", [])
        if len(names) == 1 and names[0].lower() in NAMES:
            return None
        near = difflib.get_close_matches(names[-1].lower(), NAMES, 1) if names else []
        hint = f" (did you mean {near[0]}?)" if near else " (rules/FEATURES.md lists them)"
        return f"{'.'.join(names)} is not a feature{hint}"
    if kind == "FUNCTION" and node.get("function_name") == "row":       # `a > 1, b > 2` in parentheses
        return "must be one boolean expression, not several"
    if kind == "FUNCTION":
        return _function(node)
    if kind == "OPERATOR":
        return None if node.get("type") in OPERATORS else f"operator {node.get('type', '?').lower()} is not allowed"
    if kind == "CAST":
        name = str((node.get("type_expr") or {}).get("type_name", "?"))
        return None if name.upper() in CASTS else f"cast to {name} is not allowed"
    return REFUSED.get(kind, f"{kind.lower()} expressions are not allowed")


def nodes(tree):
    """Every expression node of a parse tree (or part of one), left to right. Iterative: DuckDB
    lets an expression nest 1,000 deep."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        if "class" in node:
            yield node
        children = [v for k, v in node.items() if isinstance(v, (dict, list)) and k != "type_expr"]
        stack.extend(reversed(children))


def impure(tree) -> str | None:
    """The first thing, left to right, in a parsed expression that is not a pure computation
    over the features, or None."""
    return next(filter(None, map(_refused, nodes(tree))), None)


STUB = "select ({}) from feature_stub"


def statement(store, sql: str) -> dict | str:
    """DuckDB's own parse tree of one statement (json_serialize_sql), or what is wrong with it.
    Parsing reads no table: feature_stub need not exist."""
    try:
        tree = json.loads(store.value("select json_serialize_sql($q)", {"q": sql}))
    except RecursionError:
        return "nested too deeply"
    if tree.get("error"):
        return tree.get("error_message", "not SQL")
    if len(tree["statements"]) != 1:
        return "must be one expression"
    return tree["statements"][0]["node"]
CASES = """select _rule, _case, case _rule {whens} end from (select unnest($_rule::integer[]) as _rule,
           unnest($_case::integer[]) as _case, {cols}) order by _rule, _case"""


class Checker:
    """Checks against one store: built once per load, for every rule of it."""

    def __init__(self, store):
        self.store = store
        store.execute("create or replace temp table feature_stub as select "
                      + ", ".join(f"0::double as {n}" for n in NAMES) + " where false")
        self.tiers = [n for (n,) in store.execute("select name from tiers order by name")]
        self._shape = statement(store, STUB.format("1"))

    def where(self, where: str) -> str | None:
        """What is wrong with a `where` (None when it is fine): one boolean expression, without
        subqueries, over the feature columns, calling only pure functions."""
        node = statement(self.store, STUB.format(where))
        if isinstance(node, str):
            return node
        if len(node.get("select_list") or []) != 1 or not _same_shape(node, self._shape):
            return "must be one expression"
        problem = impure(node["select_list"])
        if problem:
            return problem
        try:
            kind = self.store.execute(f"describe {STUB.format(where)}")[0][1]
        except duckdb.Error as e:   # the binder says which types do not fit
            return str(e).split("\n")[0]
        return None if kind == "BOOLEAN" else f"must be one boolean expression, not {kind}"

    def tier(self, tier: str) -> str | None:
        if tier in ("unlimited", "authenticated"):
            # an assignment to these is a boost (enforcer/changes.assignment_effect): a rule
            # that said throttle would loosen the limits of what it found
            return f"throttle:{tier} would lift limits, not lower them: throttle to throttled, heavy or a tier of yours"
        if tier in self.tiers:
            return None
        return f"unknown tier {tier!r} (tiers: {', '.join(self.tiers)}; `pullwarden tiers set` adds one)"

    def verdicts(self, rules: list[tuple[str, list[dict]]]) -> list[list[bool | str]]:
        """Per rule (its checked `where` and its cases), per case: does it match the case's
        features (the others 0), or the error evaluating it gave. One query for all of them:
        a query costs more than the rows in it, and a load has a few dozen cases."""
        rows = [(i, j, case) for i, (_, cases) in enumerate(rules) for j, case in enumerate(cases)]
        if not rows:
            return [[] for _ in rules]
        whens = " ".join(f"when {i} then ({where})::boolean" for i, (where, _) in enumerate(rules))
        cols = ", ".join(f"unnest(${n}::double[]) as {n}" for n in NAMES)
        values = {n: [_number(case["features"].get(n)) for _, _, case in rows] for n in NAMES}
        try:
            got = self.store.execute(CASES.format(whens=whens, cols=cols),
                                     {"_rule": [i for i, _, _ in rows], "_case": [j for _, j, _ in rows], **values})
        except duckdb.Error as e:         # find the rule, then the case
            if len(rules) > 1:
                return [self.verdicts([r])[0] for r in rules]
            if len(rows) > 1:
                return [[self.verdicts([(rules[0][0], [case])])[0][0] for _, _, case in rows]]
            return [[str(e).split("\n")[0]]]
        out: list[list[bool | str]] = [[] for _ in rules]
        for i, _, match in got:
            out[i].append(bool(match))
        return out


def _number(value) -> float:
    return float(value or 0)


def _same_shape(node: dict, shape: dict) -> bool:
    """Is a parsed `select (x) from feature_stub` just that, with no where, group or limit
    smuggled in after a closing parenthesis?"""
    def bare(n: dict) -> dict:
        rest = {k: v for k, v in n.items() if k != "select_list"}
        rest["from_table"] = {k: v for k, v in (rest.get("from_table") or {}).items()
                              if not k.startswith("query_location")}
        return rest
    return bare(node) == bare(shape)

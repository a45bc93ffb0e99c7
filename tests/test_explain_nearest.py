"""explain's no-match side: for a rule that does not match an address, the conditions that failed,
each with its value, its threshold and how far it was, nearest first — so that an operator sees
how close a legitimate crowd came to the relay and re-pull rules (issue 21)."""
from __future__ import annotations

import json
import operator
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.nearest import describe, failing
from sample_logs.scenarios import asn_networks, generate
from tests.conftest import write
from tests.test_cli import invoke
from tests.test_enrich import build

START = datetime(2024, 11, 18)
NEW_RULES = ("cache-relay", "office-relay", "ci-repull-bytes")
CROWDS = ("ci-fleet", "campus-nat", "replicator", "cgnat")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A day of the four legitimate crowds and the cache reseller, as CRProxy logs it (no user
    agent, no forwarded-for), ingested by the CLI."""
    w = tmp_path_factory.mktemp("nearest")
    lines, actors = generate(days=1, start=START.replace(tzinfo=timezone.utc), scale=0.3,
                             kinds={*CROWDS, "cache-reseller"}, fmt="clf")
    write(w / "logs" / "access.log", lines)
    build(w / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    return w, {a.kind: a for a in actors}


@pytest.fixture
def cli_in(world, monkeypatch):
    w, actors = world
    monkeypatch.chdir(w)
    monkeypatch.setenv("PULLWARDEN_ASN_DB", str(w / "asn.mmdb"))
    monkeypatch.setenv("PULLWARDEN_FORMAT", "clf")
    monkeypatch.setenv("PULLWARDEN_NOW", "2024-11-18T23:30:00")
    if not (w / "data").exists():
        assert invoke("ingest", "logs").exit_code == 0
    return actors


def _explain(ip: str) -> dict:
    res = invoke("explain", ip, "--json")
    assert res.exit_code == 0, res.output
    return {v["rule"]: v for v in json.loads(res.stdout)["verdicts"]}


def test_each_new_rule_says_how_near_each_legitimate_crowd_came(cli_in):
    for kind in CROWDS:
        verdicts = _explain(cli_in[kind].addresses[0])
        for rule in NEW_RULES:
            v = verdicts[rule]
            assert not v["match"] and v["failing"], (kind, rule)
            assert 1 <= len(v["failing"]) <= v["conditions"]
            distances = [f["distance"] for f in v["failing"]]
            assert distances == sorted(distances), (kind, rule)
            for f in v["failing"]:
                # every condition named really fails, by the numbers it gives
                op = next(o for o in (">=", "<=", ">", "<", "=") if f" {o} " in f" {f['condition']} ")
                assert not OPS[op](f["value"], f["threshold"]), (kind, rule, f)
                assert f["distance"] == pytest.approx(abs(f["value"] - f["threshold"]) / abs(f["threshold"]))


def test_the_campus_was_not_a_cache_relay_by_its_quiet_hours(cli_in):
    """The campus is flat enough at night to come near the cache relay: explain names the quiet
    hours, with the campus's own quiet_share, as what kept it out — and says so in its text."""
    ip = cli_in["campus-nat"].addresses[0]
    v = _explain(ip)["cache-relay"]
    quiet = next(f for f in v["failing"] if f["condition"] == "quiet_share >= 0.18")
    assert quiet["value"] == pytest.approx(v["features"]["quiet_share"]) and quiet["threshold"] == 0.18
    assert 0 < quiet["distance"] < 1
    text = invoke("explain", ip).output
    assert (f"{len(v['failing'])} of {v['conditions']} conditions fail; nearest: {describe(v['failing'][0])}"
            in text)


def test_a_matched_rule_has_no_misses(cli_in):
    v = _explain(cli_in["cache-reseller"].addresses[0])["cache-relay"]
    assert v["match"] and v["failing"] == []


def test_nested_conditions_report_their_nearest_part(tmp_path):
    from core.store import open_store
    store = open_store(str(tmp_path / "x.duckdb"))
    try:
        where = "bytes >= 100 and (hosting = 1 or xff_values >= 10) and max_blob_downloads <= 2 * blob_hours"
        got = failing(store, where, {"bytes": 150, "hosting": 0, "xff_values": 8, "max_blob_downloads": 9,
                                     "blob_hours": 3})
        assert [(f["condition"], f["value"], f["threshold"]) for f in got] == [
            ("xff_values >= 10", 8, 10), ("max_blob_downloads <= 2 * blob_hours", 9, 6)]
        assert [f["distance"] for f in got] == [pytest.approx(0.2), pytest.approx(0.5)]
        assert failing(store, where, {"bytes": 150, "hosting": 1, "max_blob_downloads": 1, "blob_hours": 3}) == []
        # a `between` is cut in two by the reading of `and`: then the condition is named whole
        assert failing(store, "bytes between 1 and 2", {"bytes": 5}) == [
            {"condition": "bytes between 1 and 2", "value": None, "threshold": None, "distance": None}]
    finally:
        store.close()


# Conditions the shape of whose text misleads a reading by words and parentheses: `and` inside a
# string, a `between`'s `and`, an `in` list's and a function's commas, `case ... end`, `not`,
# groups the parse tree flattens. (where, features, how many top-level conditions, what fails.)
READINGS = [
    ("pulls > 5 and case when bytes > 10 then 'a and b' else 'c' end = 'a and b'", {"pulls": 1, "bytes": 20},
     2, [("pulls > 5", 1, 5)]),
    ("pulls > 5 and case when bytes > 10 then 'a and b' else 'c' end = 'a and b'", {"pulls": 9, "bytes": 2},
     2, [("case when bytes > 10 then 'a and b' else 'c' end = 'a and b'", None, None)]),
    ("bytes between 1 and 2 and pulls in (1, 2, 3) and hosting = 0", {"bytes": 5, "pulls": 3, "hosting": 1},
     3, [("hosting = 0", 1, 0), ("bytes between 1 and 2", None, None)]),
    ("greatest(bytes, pulls) >= 10 and not (hosting = 1 or xff_values > 3)",
     {"bytes": 3, "pulls": 4, "hosting": 0, "xff_values": 5},
     2, [("greatest(bytes, pulls) >= 10", 4, 10), ("not (hosting = 1 or xff_values > 3)", None, None)]),
    ("((bytes > 1 and (pulls > 2)) and ((hosting = 1 or (xff_values >= 10))))",
     {"bytes": 5, "pulls": 1, "hosting": 0, "xff_values": 8},
     3, [("xff_values >= 10", 8, 10), ("pulls > 2", 1, 2)]),
    ("least(blob_hours, 24) * 2 >= if(hosting = 1, 10, 40) AND\n  regexp_matches('x) or (y', 'or')",
     {"blob_hours": 12, "hosting": 0}, 2, [("least(blob_hours, 24) * 2 >= if(hosting = 1, 10, 40)", 24, 40)]),
    ("(pulls)::double > -1 and cast(bytes as double) < coalesce(nullif(pulls, 0), 1)", {"pulls": -3, "bytes": 4},
     2, [("(pulls)::double > -1", -3, -1), ("cast(bytes as double) < coalesce(nullif(pulls, 0), 1)", 4, -3)]),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from core.store import open_store
    s = open_store(str(tmp_path_factory.mktemp("readings") / "x.duckdb"))
    yield s
    s.close()


@pytest.mark.parametrize("where, features, count, expected", READINGS)
def test_conditions_are_read_from_duckdbs_parse_tree(store, where, features, count, expected):
    from rules.nearest import conditions
    assert conditions(store, where) == count
    got = failing(store, where, features)
    assert [(f["condition"], f["value"], f["threshold"]) for f in got] == expected


def _truth(store, sql: str, features: dict):
    cols = ", ".join(f"{float(v)}::double as {k}" for k, v in features.items())
    return store.value(f"select ({sql}) from (select {cols})")


FEATS = ("bytes", "pulls", "hosting", "xff_values", "blob_hours")
_num = st.integers(-3, 20).map(str)
_feat = st.sampled_from(FEATS)
_word = st.sampled_from(["a and b", "x) or (y", "and", "or (", "it''s and"])


@st.composite
def _atom(draw):
    """(text, left, right): a comparison's sides, or None for a condition of another kind."""
    f, g, n, m = draw(_feat), draw(_feat), draw(_num), draw(_num)
    kind = draw(st.sampled_from(["cmp", "between", "in", "not", "string", "like"]))
    if kind == "cmp":
        left = draw(st.sampled_from([f, f"2 * {f}", f"greatest({f}, {g}, {n})", f"({f} + {g})", f"{f}::double",
                                     f"case when {f} > {n} then {g} else {m} end", f"coalesce(nullif({f}, {n}), {g})"]))
        right = draw(st.sampled_from([n, f"{n} * {g}", f"least({g}, {n})", f"if({g} > {n}, {m}, {n})"]))
        op = draw(st.sampled_from([">=", "<=", ">", "<", "=", "<>"]))
        return f"{left} {op} {right}", left, right
    if kind in ("string", "like"):      # text, and truth values, compared
        left, right = (f"'{draw(_word)}'", f"'{draw(_word)}'") if kind == "string" else \
            (f"regexp_matches('{draw(_word)}', 'and')", f"({f} > {n})")
        return f"{left} {draw(st.sampled_from(['=', '<>']))} {right}", left, right
    return {"between": f"{f} {draw(st.sampled_from(['', 'not ']))}between {n} and {m}",
            "in": f"{f} in ({n}, {m}, {draw(_num)})",
            "not": f"not ({f} > {n} and {g} <= {m})"}[kind], None, None


@st.composite
def _where(draw):
    """A where of top-level conditions, each an atom or a group of atoms joined by `or`, with
    extra parentheses and any case and spacing; and the features it is judged on."""
    conjuncts = []
    for _ in range(draw(st.integers(1, 4))):
        atoms = draw(st.lists(_atom(), min_size=1, max_size=3))
        wrap = draw(st.integers(0, 2)) + (len(atoms) > 1)       # a group of `or` inside `and`
        inner = f" {draw(st.sampled_from(['or', 'OR']))} ".join(a[0] for a in atoms)
        conjuncts.append(("(" * wrap + inner + ")" * wrap, atoms))
    joint = draw(st.sampled_from([" and ", " AND ", "\n  and ", " and\n"]))
    where = joint.join(c[0] for c in conjuncts)
    if draw(st.booleans()):
        where = f"({where})"
    return where, conjuncts, {f: draw(st.integers(-2, 25)) for f in FEATS}


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_where())
def test_every_failing_condition_named_is_one_of_the_where_and_fails(store, case):
    from rules.nearest import conditions
    where, conjuncts, features = case
    assert conditions(store, where) == len(conjuncts)
    got = failing(store, where, features)
    false = [i for i, (text, _) in enumerate(conjuncts) if not _truth(store, text, features)]
    assert len(got) == len(false)
    unmatched = list(false)
    for f in got:
        # an atom of a false top-level condition, false itself, with its own sides' values
        i = next(i for i in unmatched if any(a[0] == f["condition"] for a in conjuncts[i][1]))
        unmatched.remove(i)
        text, left, right = next(a for a in conjuncts[i][1] if a[0] == f["condition"])
        assert not _truth(store, text, features)
        if left is None:
            assert f["value"] is None and f["threshold"] is None
        else:
            assert f["value"] == _truth(store, f"try_cast(({left}) as double)", features)
            assert f["threshold"] == _truth(store, f"try_cast(({right}) as double)", features)
    distances = [f["distance"] for f in got]
    assert distances == sorted(distances, key=lambda d: (d is None, d or 0))

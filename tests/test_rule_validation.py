"""A rule file is refused when it is loaded, with its file and line, when it says anything but a
pure condition over the features, a known tier, a reason over the features, and cases of each
kind that hold; and a file that is not a YAML mapping is one line, not a traceback."""
from __future__ import annotations

import pytest

from core.store import open_store
from rules.engine import RuleError, load_rules
from tests.test_cli import invoke
from tests.test_rules import GOOD


@pytest.fixture(scope="module")
def store():
    s = open_store(":memory:")
    yield s
    s.close()


def load(store, tmp_path, text: str | bytes, name: str = "bad.yml"):
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path, lambda: load_rules(store, packs=[], site_dir=str(folder))


# -- tiers -----------------------------------------------------------------------------------

def test_an_unknown_tier_is_refused_with_the_known_ones(store, tmp_path):
    path, run = load(store, tmp_path, GOOD.replace("action: ban", "action: throttle:nosuchtier"))
    with pytest.raises(RuleError, match=rf"^{path}:6: action: unknown tier 'nosuchtier' "
                                        r"\(tiers: anonymous, authenticated, heavy, throttled, unlimited;"):
        run()


def test_a_tier_is_known_once_the_store_has_it(tmp_path):
    s = open_store(":memory:")
    try:
        path, run = load(s, tmp_path, GOOD.replace("action: ban", "action: throttle:ci"))
        with pytest.raises(RuleError, match="unknown tier 'ci'"):
            run()
        s.execute("insert into tiers (name, requests_per_minute) values ('ci', 30)")
        assert [r.tier for r in run()] == ["ci"]
    finally:
        s.close()


# -- where -------------------------------------------------------------------------------------

@pytest.mark.parametrize("where, offending", [
    ("nextval('decision_ids') > 0", "nextval()"),
    ("requests > setval('decision_ids', 1)", "setval()"),
    ("currval('decision_seq') > 0", "currval()"),
    ("requests > main.abs(1)", "main.abs()"),
    ("requests > len(read_csv('/etc/passwd'))", "len()"),
    ("read_csv('/etc/passwd') is not null", "read_csv()"),
    ("read_parquet('x.parquet') is null", "read_parquet()"),
    ("read_json('x.json') is null", "read_json()"),
    ("read_text('/etc/shadow') is null", "read_text()"),
    ("read_blob('/etc/shadow') is null", "read_blob()"),
    ("glob('/root/*') is null", "glob()"),
    ("query('select 1') is null", "query()"),
    ("query_table('events') is null", "query_table()"),
    ("getenv('HOME') is null", "getenv()"),
    ("current_setting('memory_limit') is null", "current_setting()"),
    ("random() < 0.5", "random()"),
    ("now() is null", "now()"),
    ("sum(requests) > 10", "sum()"),
    ("requests > 10 or (bytes || 'x') = 'x'", "operator ||"),
    ("row_number() over () > 1", "window functions are not allowed"),
    ("list_count(list_filter([requests], x -> x > 1)) > 0", "list_count()"),
    ("requests > ?", "parameters are not allowed"),
    ("columns('req.*') > 10", r"\* and COLUMNS\(\) are not allowed"),
    ("entity = '203.0.113.7'", "entity is not a feature"),
    ("feature_stub.requests > 10", "feature_stub.requests is not a feature"),
    ("requets > 10", r"requets is not a feature \(did you mean requests\?\)"),
    ("requests::integer[] is null", r"cast to INTEGER\[\]|not allowed"),
    ("exists (select 1)", "subqueries are not allowed"),
    # text after a closing parenthesis lands outside the parentheses the loader puts around it
    ("requests > 10) as ok, (nextval('decision_ids') > 0", "must be one expression"),
    ("true) or (nextval('decision_ids') > 0", "nextval()"),
    ("requests > 10) from events where (true", "syntax error"),
    ("requests > 10) order by (random()", "syntax error"),
])
def test_a_where_that_is_not_a_pure_condition_is_refused(store, tmp_path, where, offending):
    before = store.value("select count(*) from duckdb_sequences()")
    path, run = load(store, tmp_path, GOOD.replace("where: requests > 10", f'where: "{where}"'))
    with pytest.raises(RuleError, match=rf"^{path}:5: where: .*{offending}"):
        run()
    assert store.value("select count(*) from duckdb_sequences()") == before


def test_a_pure_condition_with_the_allowed_functions_loads(store, tmp_path):
    where = ("coalesce(repeat_ratio, 0) between 0 and 5 and least(requests, 100) in (11, 100) "
             "and round(ln(bytes + 1), 1) >= 0 and abs(-requests) >= sqrt(100) and greatest(errors, 0) is not null "
             "and case when hosting = 1 then true else requests > 10 end and cast(requests as integer) % 2 = 1 "
             "and not (xff_values > 3) and requests ^ 2 > 100 and Requests // 1 = requests")
    path, run = load(store, tmp_path, GOOD.replace("where: requests > 10", f'where: "{where}"'))
    rule, = run()
    assert rule.where == where and {"requests", "repeat_ratio", "bytes", "errors", "hosting", "xff_values"} <= rule.uses


# -- reason ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reason, message", [
    ("{enum_requests.__class__.__mro__}", r"reason names an unknown feature: \{enum_requests.__class__.__mro__\}"),
    ("{requests[0]}", r"reason names an unknown feature: \{requests\[0\]\}"),
    ("{requests.real}", "reason names an unknown feature"),
    ("{reqs} requests", r"reason names an unknown feature: \{reqs\}"),
    ("{} requests", "reason names an unknown feature"),
    ("{0} requests", "reason names an unknown feature"),
    ("{requests!r} requests", r"reason converts a feature: \{requests!r\}"),
    ("{requests:x} requests", r"reason uses an unknown format: \{requests:x\} \(formats: gib, pct, int, .0f to .3f\)"),
    ("{requests:>100000000}", "reason uses an unknown format"),
    ("{requests:{bytes}}", "reason uses an unknown format"),
    ("{requests", "reason is not a template"),
    ("requests}", "reason is not a template"),
])
def test_a_reason_names_features_and_formats_only(store, tmp_path, reason, message):
    path, run = load(store, tmp_path, GOOD.replace('reason: "{requests:int} requests"', f"reason: '{reason}'"))
    with pytest.raises(RuleError, match=rf"^{path}:8: {message}"):
        run()


def test_the_reason_formats(store, tmp_path):
    text = GOOD.replace('"{requests:int} requests"',
                        '"{requests:int} {bytes:gib} GiB {byte_share:pct} {repeat_ratio:.1f}x {errors} {{literal}}"')
    rule, = load(store, tmp_path, text)[1]()
    assert rule.explain({"requests": 11.0, "bytes": 3 << 30, "byte_share": 0.25, "repeat_ratio": 7, "errors": None}) \
        == "11 3.0 GiB 25% 7.0x ? {literal}"


# -- cases -------------------------------------------------------------------------------------

TWO = """rules:
  - name: first
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
  - name: second
    description: d
    entity: address
    window: 24h
    where: errors > 100
    action: ban
    duration: 1h
    reason: "{errors:int} errors"
    cases:
      - expect: match
        note: >
          a scanner, over
          two lines
        features: {errors: 101}
      - {expect: no-match, note: a quiet client, features: {errors: 101}}
"""


@pytest.mark.parametrize("text, line, message", [
    (GOOD.split("cases:")[0], 1, "rule 't' needs a case of each kind; it has no `expect: match` and "
                                 "`expect: no-match` case"),
    (GOOD.replace("  - {expect: no-match, features: {requests: 10}}\n", ""), 9,
     "rule 't' needs a case of each kind; it has no `expect: no-match` case"),
    (GOOD.replace("{requests: 11}", "{requests: 5}"), 10,
     r"case expects match, but rule 't' does not match it \{'requests': 5\}"),
    (GOOD.replace("{requests: 10}", "{requests: 50}"), 11, "case expects no-match, but rule 't' matches it"),
    (TWO, 27, "case expects no-match, but rule 'second' matches it: a quiet client$"),
    (TWO.replace("{errors: 101}}", "{errors: 100}}").replace("{errors: 101}", "{errors: 99}"), 22,
     "case expects match, but rule 'second' does not match it: a scanner, over two lines$"),
    (GOOD.replace("requests > 10", "cast(requests * 1e12 as integer) > 10"), 10,
     "case .*: the condition fails on it: Conversion Error"),
    (GOOD.replace("{expect: match, features: {requests: 11}}", "match"), 10, "a case is {expect: match|no-match"),
    (GOOD.replace("{expect: match, features: {requests: 11}}", "{expect: match, feature: {requests: 11}}"), 10,
     "a case is {expect"),
    (GOOD.replace("{requests: 11}", "{reqs: 11}"), 10, r"a case needs known features \(unknown: \['reqs'\]\)"),
    (GOOD.replace("{requests: 11}", "{requests: lots}"), 10, "case feature requests is 'lots', not a number"),
])
def test_cases_are_checked_when_the_rule_is_loaded(store, tmp_path, text, line, message):
    path, run = load(store, tmp_path, text)
    with pytest.raises(RuleError, match=rf"^{path}:{line}: {message}"):
        run()


def test_case_numbers_may_be_written_as_yaml_strings(store, tmp_path):
    rule, = load(store, tmp_path, GOOD.replace("{requests: 11}", "{requests: 11e0}"))[1]()
    assert rule.cases[0]["features"] == {"requests": "11e0"} and rule.case_lines == [10, 11]


# -- files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"", ": empty file$"),
    (b"  \n\n\t\n", ": empty file$"),
    (b"# a rule will go here\n", r": empty file \(only comments\)$"),
    (b"- name: t\n- where: requests > 1\n", ":1: not a YAML mapping"),
    (b"\n\njust words\n", ":3: not a YAML mapping"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r": not UTF-8 text \(byte 0 is 0x89\)$"),
    (b"name: t\n\x00\x01\x02\x03", r":2: not UTF-8 text \(a NUL byte\)$"),
    (b"name: t\ndescription: \x07bell\n", ":2: not valid YAML: unacceptable character #x0007"),
    (b"name: t\ndescription: d\nwhere: [unclosed\naction: ban\n",
     r":4: not valid YAML: did not find expected ',' or ']' \(while parsing a flow sequence at line 3\)$"),
    (b"name: t\nwhere: a: b\n", ":2: not valid YAML: mapping values are not allowed"),
    (b"name: t\n---\nname: u\n", ":2: not valid YAML: but found another document"),
    (b"name: !!python/object:os.system x\n", ":1: not valid YAML: could not determine a constructor"),
    (b"rules: {name: t}\n", ":1: `rules` must be a list"),
    (b"rules: []\nname: t\n", ":2: unknown key 'name' beside `rules`"),
    (b"rules:\n  - just a string\n", ":2: a rule must be a mapping"),
    (GOOD.replace("action: ban", "action: ban\nwhere: requests > 0").encode(), ":7: 'where' is given twice "
                                                                              r"\(first at line 5\)"),
])
def test_a_file_that_is_not_a_rule_mapping_is_one_line(store, tmp_path, content, message):
    path, run = load(store, tmp_path, content)
    with pytest.raises(RuleError, match=rf"^{path}{message}") as e:
        run()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content, message", [
    (b"", "site/x.yml: empty file"),
    (b"\xff\xfe\x00b\x00i\x00n", "site/x.yml: not UTF-8 text"),
    (b"[1, 2]\n", "site/x.yml:1: not a YAML mapping"),
    (GOOD.replace("{requests: 11}", "{requests: 3}").encode(), "site/x.yml:10: case expects match"),
    (GOOD.replace("requests > 10", "nextval('decision_ids') > 0").encode(), "site/x.yml:5: where: nextval()"),
])
def test_detect_says_it_in_one_line_and_exits_2(workdir, content, message):
    (workdir / "site").mkdir()
    (workdir / "site" / "x.yml").write_bytes(content)
    res = invoke("detect", "--rules", "site")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith(f"pullwarden: error: site/x.yml") and message in res.stderr
    assert res.stderr.count("\n") == 1


def test_a_throttle_to_a_generous_tier_is_refused(tmp_path):
    from core.store import open_store
    from rules.engine import RuleError, load_rules
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "x.yml").write_text("""name: loosen
description: x
entity: address
window: 24h
where: requests >= 10
action: throttle:unlimited
duration: 1h
reason: "{requests:int} requests"
cases:
  - {expect: match, features: {requests: 10}}
  - {expect: no-match, features: {requests: 9}}
""")
    store = open_store(str(tmp_path / "db.duckdb"))
    try:
        with pytest.raises(RuleError, match="would lift limits"):
            load_rules(store, packs=[str(pack)])
    finally:
        store.close()

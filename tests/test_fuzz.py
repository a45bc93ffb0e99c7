"""OpenAPI fuzzing with schemathesis over real HTTP: whatever a client sends, no 5xx, and
nothing it got accepted is a ban or an allowlist entry the validation should have refused.
And the agent's side: whatever a server sends, the agent refuses it or can render it safely,
and it takes every tier name the API took."""
from __future__ import annotations

import copy
import gzip
import json
import re
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import values
from enforcer import policy_doc
from enforcer.agent import apply, normalized
from enforcer.app import create_app
from enforcer.render import render
from tests.enforcer_helpers import Enforcer


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    e = Enforcer(tmp_path_factory.mktemp("fuzz"))
    e.ban("203.0.113.7")
    e.services.publisher.publish()
    yield e
    e.stop()


def test_no_server_errors(api):
    schema = schemathesis.openapi.from_dict(create_app(api.services).openapi())
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    for op in operations:
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            case.headers = {**(case.headers or {}), "X-Api-Key": api.keys["admin"]}
            response = case.call(base_url=api.url)
            if response.status_code >= 500:
                failures.append((op.label, response.status_code, response.text[:200]))
        run()
    assert failures == []
    with api.services.lock:
        bans = api.store.execute("""select d.scope, d.value, a.details from decisions d
                                    left join audit a on a.action = 'add ban' and a.target = d.scope || ' ' || d.value
                                    where d.origin = 'manual' and d.effect = 'ban'""")
        allowed = api.store.execute("select kind, value from allowlist")
    for scope, value, details in bans:
        assert values.canonical(scope, value) == value
        if scope in ("ip", "range"):
            assert values.network(value).prefixlen > 0
            if values.why_not_ban(scope, value, values.WIDEST):
                assert '"forced"' in (details or ""), (scope, value)
    for kind, value in allowed:
        assert values.canonical(kind, value) == value
        assert kind != "cidr" or values.too_wide(values.network(value), values.WIDEST) is None


# ---- the agent's side (issue 19 §4, §5): what it accepts it can render; what the API takes, it accepts

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=4),
                    max_leaves=12)
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")


def genuine_policy(api) -> dict:
    return json.loads(gzip.decompress(api.services.publisher.publish().body))


def paths(doc, prefix=()):
    """Every place in a JSON document, as a path of keys and indexes."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


def replaced(doc, path, value):
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


def renders_safely(policy: dict) -> None:
    """What the check let through renders, and every tier name in nginx's include is one token."""
    files = render(normalized(policy), warn=lambda m: None)
    http = files["nginx-pullwarden-http.conf"]
    for zone in re.findall(r"\$pw_key_(\S+) \{", http):
        assert IDENTIFIER.fullmatch(zone), zone
    for t in policy["tiers"]:
        assert values.tier_name(t) == t
    assert http.count("{") == http.count("}")


def test_the_agent_takes_only_what_it_can_render(api):
    """Any value anywhere in a genuine policy: refused with Malformed, or rendered safely."""
    api.ban("mallory", scope="user", reason="scraper")
    api.ban("192.0.2.10", effect="throttle", tier="throttled", reason="heavy")
    api.ban("198.51.100.0/30", scope="range", reason="rotation")
    base = genuine_policy(api)
    places = list(paths(base))

    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(where=st.sampled_from(places), value=JSON)
    def check(where, value):
        doc = replaced(base, where, value)
        try:
            policy_doc.policy(doc)
        except policy_doc.Malformed:
            return
        renders_safely(doc)
    check()


def test_a_policy_with_any_tier_names_is_taken_only_when_each_name_is(api):
    """Tier names are keys: drawn as any text (and nginx's words), the policy is taken exactly
    when core/values takes every name, and then renders safely."""
    base = genuine_policy(api)
    limits = base["tiers"]["throttled"]
    names = st.lists(st.one_of(st.text(max_size=40), st.from_regex(values.TIER_NAME, fullmatch=True),
                               st.sampled_from(sorted(values.TIER_RESERVED))), min_size=1, max_size=5, unique=True)

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(names=names)
    def check(names):
        doc = {**base, "tiers": dict.fromkeys(names, limits),
               "default_tiers": {"anonymous": names[0], "authenticated": names[-1]}}
        try:
            values.tier_names(names)
            expected = True
        except ValueError:
            expected = False
        try:
            policy_doc.policy(doc)
        except policy_doc.Malformed:
            assert not expected, names
            return
        assert expected, names
        renders_safely(doc)
    check()


def test_a_change_the_agent_takes_keeps_its_policy_one_it_can_render(api):
    """Any change from the held version: refused, or applied to a policy that still checks out."""
    base = genuine_policy(api)
    v = base["version"]
    entry = {"id": 9, "scope": "ip", "value": "203.0.113.9", "until": "2030-01-01T00:00:00", "reason": "r", "rule": "x"}
    good = {"since": v, "version": v + 1, "upsert": {"bans": [entry], "assignments": []},
            "remove": {"bans": [{"key": "ip:203.0.113.7"}], "assignments": []}, "sections": {"tiers": base["tiers"]}}
    places = list(paths(good))

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(where=st.sampled_from(places), value=JSON)
    def check(where, value):
        change = replaced(good, where, value)
        try:
            policy_doc.delta(change, v)
        except policy_doc.Malformed:
            return
        after = apply(base, change)
        policy_doc.policy(after)
        renders_safely(after)
    check()


def test_every_tier_name_the_api_takes_the_agent_takes(api):
    """Names through the real PUT /v1/admin/tiers/{name}: taken exactly when core/values takes
    them (and no tier shares the zone), never a 5xx; the published policy then checks out."""
    taken: list[str] = []
    names = st.one_of(st.text(max_size=40), st.from_regex(values.TIER_NAME, fullmatch=True),
                      st.sampled_from(sorted(values.TIER_RESERVED)))

    @settings(max_examples=50, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(name=names)
    def check(name):
        r = httpx.put(f"{api.url}/v1/admin/tiers/{quote(name, safe='')}", headers=api.headers("admin"), timeout=10,
                      json={"requests_per_minute": 60, "reason": "fuzz"})
        try:
            clash = values.tier_clash(values.tier_name(name), taken)
        except ValueError:
            assert r.status_code in (404, 405, 422), (name, r.text)     # 404, 405: a '/' makes it another route
        else:
            assert r.status_code == (409 if clash else 200), (name, r.text)
        if r.status_code == 200 and name not in taken:
            taken.append(name)
    check()
    assert len(taken) > 10
    policy = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy"), timeout=10).json()
    assert set(taken) <= set(policy_doc.policy(policy)["tiers"])
    renders_safely(policy)

"""OpenAPI fuzzing with schemathesis over real HTTP: whatever a client sends, no 5xx, and
nothing it got accepted is a ban or an allowlist entry the validation should have refused."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from core import values
from enforcer.app import create_app
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

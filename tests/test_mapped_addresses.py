"""An address and its IPv4-mapped form are one client; a bulk change is fetched whole, and a
CrowdSec bouncer's poll after one is answered in full."""
from __future__ import annotations

import httpx
import pytest

from tests.enforcer_helpers import Enforcer


@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def post(api, path, body):
    r = httpx.post(api.url + path, json=body, headers=api.headers("admin"), timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def check(api, ip):
    return httpx.get(api.url + "/v1/check", params={"ip": ip}, headers=api.headers("proxy"), timeout=30).json()


def decisions(api, ip):
    return httpx.get(api.url + "/v1/decisions", params={"ip": ip}, headers=api.headers("proxy"), timeout=30).json()


@pytest.mark.parametrize("ban, scope, query", [
    ("::ffff:192.0.2.1", "ip", "::ffff:192.0.2.1"),          # an admin ban in the mapped form (kept so by canonical())
    ("::ffff:192.0.2.0/120", "range", "::ffff:192.0.2.1"),   # a range in the mapped form
])
def test_mapped_ban_still_applies_to_the_same_mapped_address(api, ban, scope, query):
    post(api, "/v1/admin/bans", {"scope": scope, "value": ban, "duration": "1h", "reason": "repro"})
    c = check(api, query)
    d = decisions(api, query)
    assert not c["allowed"] and len(d) == 1
    assert not check(api, query.removeprefix("::ffff:"))["allowed"]       # the same client, written as IPv4


def test_rows_already_stored_in_the_mapped_form_still_match(api):
    api.ban("::ffff:c000:201")                                    # as canonical() wrote it before the fix
    api.ban("::ffff:c633:6400/120", scope="range")
    api.services.publisher.publish()
    for q in ("::ffff:192.0.2.1", "192.0.2.1", "198.51.100.9", "::ffff:198.51.100.9"):
        assert not check(api, q)["allowed"], q
    assert check(api, "192.0.2.2")["allowed"]


def test_a_bulk_change_is_fetched_whole_not_as_a_delta(api):
    from enforcer.agent import poll
    held = poll(api.url, api.keys["proxy"], None)
    with api.services.lock:
        api.store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
            select nextval('decision_seq'), 'ip', '10.0.' || (i // 256) || '.' || (i % 256), 'ban', 'bulk', 'import',
                   'bulk', ?, ? + interval 1 day from range(5000) t(i)""", [api.clock(), api.clock()])
    api.services.publisher.publish()
    r = httpx.get(api.url + f"/v1/policy/changes?since={held['version']}", headers=api.headers("proxy"), timeout=30)
    assert r.status_code == 410
    held = poll(api.url, api.keys["proxy"], held)
    assert len(held["bans"]) == 5000 and held["version"] == api.services.publisher.current.version


def test_a_bouncer_poll_after_a_bulk_change_gets_all_of_it(api):
    stream = api.url + "/v1/decisions/stream"
    assert httpx.get(stream + "?startup=true", headers=api.headers("proxy")).json()["new"] == []
    with api.services.lock:
        api.store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
            select nextval('decision_seq'), 'ip', '10.1.' || (i // 256) || '.' || (i % 256), 'ban', 'bulk', 'import',
                   'bulk', ?, ? + interval 1 day from range(3000) t(i)""", [api.clock(), api.clock()])
    api.services.publisher.publish()
    assert api.services.publisher.delta_size(api.services.publisher.current.version - 1) == 3000
    poll = httpx.get(stream, headers=api.headers("proxy"), timeout=30).json()     # built on a worker thread
    assert len(poll["new"]) == 3000 and poll["deleted"] == []
    assert httpx.get(stream, headers=api.headers("proxy")).json() == {"new": [], "deleted": []}

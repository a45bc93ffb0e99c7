"""The enforcer API over real HTTP (uvicorn on loopback)."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from enforcer.app import create_app
from enforcer.routes.crowdsec import go_duration
from tests.enforcer_helpers import Enforcer


@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def get(api, path, role=None, **kw):
    headers = {**(api.headers(role) if role else {}), **kw.pop("headers", {})}
    return httpx.get(api.url + path, headers=headers, **{"timeout": 30, **kw})


def test_keys_guard_everything_but_healthz(api):
    assert get(api, "/healthz").json()["status"] == "ok"
    assert get(api, "/v1/policy").status_code == 401
    assert get(api, "/v1/policy", headers={"X-Api-Key": "pw_wrong"}).status_code == 403
    assert get(api, "/v1/policy", "viewer").status_code == 403          # a viewer reads statistics only
    r = get(api, "/v1/decisions/stream", headers={"X-Api-Key": "nope"})
    assert (r.status_code, r.json()) == (403, {"message": "access forbidden"})
    assert get(api, "/v1/stats/budget", "proxy").status_code == 403
    assert get(api, "/metrics").status_code == 401
    assert get(api, "/openapi.json").status_code == 401 and get(api, "/docs").status_code == 401
    assert get(api, "/docs", "viewer").status_code == 404               # no docs pages, even with a key
    for role in ("proxy", "viewer", "admin"):
        schema = get(api, "/openapi.json", role).json()
        assert "/v1/check" in schema["paths"] and "/v1/admin/keys" in schema["paths"]
    assert "pullwarden_policy_version" in get(api, "/metrics", "viewer").text


def test_every_admin_route_refuses_proxy_and_viewer_keys(api):
    schema = create_app(api.services).openapi()
    routes = [(m.upper(), path) for path, ops in schema["paths"].items() if path.startswith("/v1/admin")
              for m in ops]
    assert len(routes) >= 9
    for method, path in routes:
        url = api.url + path.replace("{decision_id}", "1").replace("{name}", "allowed")
        for role in ("proxy", "viewer"):
            r = httpx.request(method, url, headers=api.headers(role), json={"reason": "x"}, timeout=10)
            assert r.status_code == 403, (method, path, role)


def test_policy_etag_304_and_one_version_per_change(api):
    r = get(api, "/v1/policy", "proxy")
    v1, etag = r.json()["version"], r.headers["etag"]
    assert {k: r.json()["tiers"]["anonymous"][k] for k in ("requests_per_minute", "burst")} == \
        {"requests_per_minute": 300, "burst": 600}
    assert get(api, "/v1/policy", "proxy", headers={"If-None-Match": etag}).status_code == 304
    r = httpx.post(api.url + "/v1/admin/bans", headers=api.headers("admin"), timeout=10,
                   json={"scope": "ip", "value": "203.0.113.7", "duration": "2h", "reason": "scanner"})
    assert r.status_code == 201
    r2 = get(api, "/v1/policy", "proxy", headers={"If-None-Match": etag})
    assert r2.status_code == 200 and r2.json()["version"] == v1 + 1
    assert r2.json()["bans"]["ip:203.0.113.7"]["reason"] == "scanner"
    assert get(api, "/v1/policy", "proxy", headers={"If-None-Match": r2.headers["etag"]}).status_code == 304
    api.services.publisher.publish()                                  # nothing changed: no new version
    assert get(api, "/v1/policy", "proxy").json()["version"] == v1 + 1
    audit = get(api, "/v1/admin/audit", "admin").json()
    assert audit[0]["actor"] == "admin" and audit[0]["action"] == "add ban" and audit[0]["reason"] == "scanner"


def test_policy_is_sent_gzipped_or_plain_and_the_same(api):
    for n in range(300):
        api.ban(f"198.51.100.{n % 256}" if n < 256 else f"2001:db8::{n:x}", reason=f"storm {n}")
    api.services.publisher.publish()
    gz = httpx.get(api.url + "/v1/policy", headers={**api.headers("proxy"), "Accept-Encoding": "gzip"})
    plain = httpx.get(api.url + "/v1/policy", headers={**api.headers("proxy"), "Accept-Encoding": "identity"})
    assert gz.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert int(gz.headers["content-length"]) * 3 < len(plain.content)
    assert gz.json() == plain.json() and len(plain.json()["bans"]) == 300
    assert gz.headers["etag"] != plain.headers["etag"]
    for etag in (gz.headers["etag"], plain.headers["etag"]):          # either names this version
        assert get(api, "/v1/policy", "proxy", headers={"If-None-Match": etag}).status_code == 304
    from enforcer.routes.policy import takes_gzip
    assert [takes_gzip(h) for h in ("gzip", "deflate, gzip;q=0.5", "*", "gzip;q=0", "identity", None, "br",
                                    "*, gzip;q=0", "*;q=0, gzip")] == \
        [True, True, True, False, False, False, False, False, True]


def test_changes_since_a_version_and_410_when_too_old(api):
    v1 = get(api, "/v1/policy", "proxy").json()["version"]
    ban = api.ban("198.51.100.9", hours=1)
    api.services.publisher.publish()
    api.ban("2001:db8::/64", scope="range")
    api.services.publisher.publish()
    with api.services.lock:
        api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?", [api.clock(), ban])
    api.services.publisher.publish()
    d = get(api, f"/v1/policy/changes?since={v1}", "proxy").json()
    assert d["version"] == v1 + 3
    assert [e["value"] for e in d["upsert"]["bans"]] == ["2001:db8::/64"]
    assert [e["value"] for e in d["remove"]["bans"]] == ["198.51.100.9"]
    assert get(api, f"/v1/policy/changes?since={v1 + 3}", "proxy").json()["upsert"]["bans"] == []
    assert get(api, f"/v1/policy/changes?since={v1 + 99}", "proxy").status_code == 410
    assert get(api, "/v1/policy/changes?since=-1", "proxy").status_code == 422


def test_check_gives_the_verdict_and_why(api):
    api.ban("203.0.113.7", reason="re-pull storm")
    api.ban("198.51.100.0/24", scope="range", effect="throttle", tier="throttled", reason="heavy range")
    api.ban("198.51.100.5", effect="boost", tier="unlimited", reason="partner")
    with api.services.lock:
        api.store.execute("insert into image_lists values ('blocked', 'docker.io/evil/*', 'malware', now())")
        api.store.execute("insert into image_lists values ('unlimited', 'docker.io/library/busybox', 'tiny', now())")
    api.services.publisher.publish()
    c = get(api, "/v1/check?ip=203.0.113.7", "proxy").json()
    assert not c["allowed"] and "re-pull storm" in c["why"][0]
    c = get(api, "/v1/check?ip=198.51.100.20", "proxy").json()
    assert (c["allowed"], c["tier"], c["limits"]["requests_per_minute"], c["limits"]["burst"]) == \
        (True, "throttled", 30, 60)
    c = get(api, "/v1/check?ip=198.51.100.5", "proxy").json()
    assert c["tier"] == "unlimited"                      # the address beats its range
    c = get(api, "/v1/check?ip=192.0.2.1&user=alice&image=docker.io/busybox:1.36", "proxy").json()
    assert c["tier"] == "unlimited" and any("unlimited list" in w for w in c["why"])
    c = get(api, "/v1/check?ip=192.0.2.1&image=docker.io/evil/miner:latest", "proxy").json()
    assert not c["allowed"] and "blocked" in c["why"][0]
    c = get(api, "/v1/check?ip=192.0.2.1&user=alice", "proxy").json()
    assert c["tier"] == "authenticated"


def test_crowdsec_stream_cursor_expiry_and_filters(api):
    h = api.headers("proxy")
    api.ban("203.0.113.7", hours=4, rule="ci-repull-recidive")
    api.ban("2001:db8:1::/64", scope="range", hours=1, rule="rotation-range")
    api.ban("alice", scope="user", hours=1)                         # not for bouncers' default scopes
    api.ban("198.51.100.1", effect="throttle", tier="throttled")    # never on this stream
    api.services.publisher.publish()
    r = httpx.get(api.url + "/v1/decisions/stream?startup=true&community_pull=false", headers=h)
    first = r.json()
    assert sorted((d["scope"], d["value"], d["type"]) for d in first["new"]) == [
        ("Ip", "203.0.113.7", "ban"), ("Range", "2001:db8:1::/64", "ban")]
    storm = next(d for d in first["new"] if d["value"] == "203.0.113.7")
    assert (storm["duration"], storm["scenario"], storm["origin"]) == ("4h0m0s", "ci-repull-recidive", "pullwarden")
    assert first["deleted"] == []
    again = httpx.get(api.url + "/v1/decisions/stream?startup=false", headers=h).json()
    assert again == {"new": [], "deleted": []}
    api.clock.advance(hours=1, seconds=1)                           # the range ban expires by itself
    api.services.publisher.publish()
    gone = httpx.get(api.url + "/v1/decisions/stream", headers=h).json()
    assert gone["new"] == [] and [d["value"] for d in gone["deleted"]] == ["2001:db8:1::/64"]
    assert gone["deleted"][0]["duration"].startswith("-")
    only = httpx.get(api.url + "/v1/decisions/stream?startup=true&scopes=range", headers=h).json()
    assert only["new"] == []
    no = httpx.get(api.url + "/v1/decisions/stream?startup=true&scenarios_not_containing=repull", headers=h).json()
    assert no["new"] == []
    assert httpx.head(api.url + "/v1/decisions/stream", headers=h).status_code == 200
    d = httpx.get(api.url + "/v1/decisions?ip=203.0.113.7", headers=h).json()
    assert [x["value"] for x in d] == ["203.0.113.7"]
    assert httpx.get(api.url + "/v1/decisions?ip=192.0.2.1", headers=h).json() == []


def test_decisions_by_range_and_scope(api):
    """GET /v1/decisions?range= finds the address bans inside it and the ranges that overlap it
    (bans are held packed, an address scope's entries read as one block)."""
    h = {"X-Api-Key": api.headers("proxy")["X-Api-Key"]}
    for value in ("198.51.100.7", "198.51.100.200", "203.0.113.9"):
        api.ban(value)
    api.ban("198.51.0.0/16", scope="range")
    api.services.publisher.publish()
    found = httpx.get(api.url + "/v1/decisions?range=198.51.100.0/24", headers=h).json()
    assert sorted(d["value"] for d in found) == ["198.51.0.0/16", "198.51.100.200", "198.51.100.7"]
    ranges = httpx.get(api.url + "/v1/decisions?scope=range", headers=h).json()
    assert [d["value"] for d in ranges] == ["198.51.0.0/16"]
    assert len(httpx.get(api.url + "/v1/decisions", headers=h).json()) == 4


def test_pycrowdsec_stream_client(api):
    from pycrowdsec.client import StreamClient
    api.ban("203.0.113.7", hours=2)
    api.services.publisher.publish()
    client = StreamClient(api.keys["proxy"], lapi_url=api.url + "/", interval=1)
    client.cycle("true")                                            # start-up
    assert client.get_current_decisions() == {"203.0.113.7/32": "ban"}   # it keeps addresses as /32s
    new = api.ban("203.0.113.8", hours=1)
    api.services.publisher.publish()
    client.cycle("false")                                           # a new ban
    assert client.get_action_for("203.0.113.8") == "ban"
    with api.services.lock:
        api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?", [api.clock(), new])
    api.services.publisher.publish()
    client.cycle("false")                                           # an unban
    assert client.get_action_for("203.0.113.8") is None
    api.clock.advance(hours=2, seconds=5)
    api.services.publisher.publish()
    client.cycle("false")                                           # a natural expiry
    assert client.get_current_decisions() == {}


def test_a_100k_startup_is_streamed(api):
    with api.services.lock:
        api.store.execute("""
            insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
            select nextval('decision_seq'), 'ip', '10.' || (i // 65536) || '.' || (i // 256 % 256) || '.' || (i % 256),
                   'ban', 'bulk', 'import', 'bulk import', ?, ? from range(100000) t(i)""",
            [api.clock(), api.clock() + __import__("datetime").timedelta(hours=3)])
    api.services.publisher.publish()
    with httpx.stream("GET", api.url + "/v1/decisions/stream?startup=true", headers=api.headers("proxy"),
                      timeout=60) as r:
        assert r.headers.get("transfer-encoding") == "chunked"
        body = b"".join(r.iter_bytes())
    data = json.loads(body)
    assert len(data["new"]) == 100_000 and data["deleted"] == []
    assert len({d["value"] for d in data["new"]}) == 100_000


def test_repeated_bad_keys_are_slowed(api):
    from enforcer.keys import Failures
    now = [0.0]
    f = Failures(clock=lambda: now[0])
    # five free, then doubling from 0.1 s, up to 5 s; per address, over the last minute
    assert [f.record("198.51.100.7") for _ in range(8)] == [0, 0, 0, 0, 0, 0.1, 0.2, 0.4]
    assert f.record("198.51.100.8") == 0
    assert max(f.record("198.51.100.7") for _ in range(20)) == Failures.MAX_DELAY
    now[0] = 61.0
    assert f.record("198.51.100.7") == 0                     # a minute later the count starts again
    # and the server waits that long before its 403: a lower bound, which holds on a busy machine
    times = []
    for _ in range(8):
        t = time.perf_counter()
        assert get(api, "/v1/policy", headers={"X-Api-Key": "pw_guess"}).status_code in (401, 403)
        times.append(time.perf_counter() - t)
    assert times[-1] >= 0.4


def test_go_durations():
    assert [go_duration(s) for s in (14399, 3600, 60, 59, 0, -5, -3661)] == \
        ["3h59m59s", "1h0m0s", "1m0s", "59s", "0s", "-5s", "-1h1m1s"]


def test_versions_only_grow_across_restarts(api, tmp_path):
    from enforcer.service import Services
    api.ban("203.0.113.9")
    before = api.services.publisher.publish().version
    again = Services(api.store, api.cfg, clock=api.clock)            # a restart over the same file
    assert again.publisher.current.version == before                  # same content: same version
    api.ban("203.0.113.10")
    assert again.publisher.publish().version == before + 1
    assert again.publisher.changes(before)["upsert"]["bans"][0]["value"] == "203.0.113.10"


def test_a_failing_job_shows_in_health_and_metrics_and_the_policy_stays(api):
    from enforcer.jobs import _guarded
    version = get(api, "/v1/policy", "proxy").json()["version"]

    def broken():
        raise OSError("disk full")
    _guarded(api.services, "detect", broken)()
    health = get(api, "/healthz").json()
    assert health["status"] == "degraded" and "disk full" in health["jobs"]["detect"]["error"]
    assert 'pullwarden_job_failing{job="detect"} 1' in get(api, "/metrics", "viewer").text
    assert get(api, "/v1/policy", "proxy").json()["version"] == version
    _guarded(api.services, "detect", lambda: None)()
    assert get(api, "/healthz").json()["status"] == "ok"


def test_stats_for_the_dashboard(api):
    from tests.detect_helpers import add_events, storm
    from rules.rollup import roll_up
    with api.services.lock:
        add_events(api.store, storm("203.0.113.7", hours=3))
        roll_up(api.store)
    traffic = get(api, "/v1/stats/traffic?hours=24", "viewer").json()
    assert [t["requests"] for t in traffic["series"]] == [16, 16, 16] and traffic["bucket"] == "hour"
    assert traffic["totals"]["requests"] == 48 and traffic["previous_totals"]["requests"] == 0
    top = get(api, "/v1/stats/top?by=address", "viewer").json()["rows"]
    assert top[0]["entity"] == "203.0.113.7" and top[0]["requests"] == 48 and top[0]["share"] == 1.0
    budget = get(api, "/v1/stats/budget", "viewer").json()
    assert budget["month"] == "2024-11" and budget["budget_tib"] == 100 and budget["bytes"] > 0
    assert get(api, "/v1/stats/decisions", "viewer").json() == []


def test_refresh_rebuilds_only_when_something_expires(api):
    api.ban("203.0.113.20", hours=1)
    v = api.services.publisher.publish().version
    api.clock.advance(minutes=30)
    assert api.services.publisher.refresh().version == v
    api.clock.advance(minutes=31)
    after = api.services.publisher.refresh()
    assert after.version == v + 1 and "ip:203.0.113.20" not in after.content["bans"]


def test_history_keeps_differences_not_copies(api):
    for n in range(5):
        api.ban(f"203.0.113.{30 + n}")
        api.services.publisher.publish()
    pub = api.services.publisher
    old = [v for n, v in pub.history.items() if n != pub.current.version]
    assert old and all(v.content == {} and v.body == b"" for v in old)
    assert pub.current.content["bans"] and pub.changes(pub.current.version - 4)["upsert"]["bans"]


def test_changes_made_while_the_server_was_down_reach_pollers(api):
    from enforcer.service import Services
    first = api.ban("192.0.2.1")
    v = api.services.publisher.publish().version
    api.services.cursors.clear()
    with api.services.lock:                       # while "down": one unban, one new ban
        api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?", [api.clock(), first])
    api.ban("192.0.2.2")
    again = Services(api.store, api.cfg, clock=api.clock)
    assert again.publisher.current.version == v + 1
    d = again.publisher.changes(v)
    assert [e["value"] for e in d["upsert"]["bans"]] == ["192.0.2.2"]
    assert [e["value"] for e in d["remove"]["bans"]] == ["192.0.2.1"]


def test_changes_since_before_a_version_without_a_delta_is_410(api):
    assert api.services.publisher.changes(0) is None      # version 1 was built with nothing before it
    assert get(api, "/v1/policy/changes?since=0", "proxy").status_code == 410


def test_an_allowlisted_range_beats_an_asn_ban(api):
    with api.services.lock:
        api.store.execute("insert into ip_info values ('198.51.100.7', 64500, 'EXAMPLE', 'CN')")
    api.ban("64500", scope="asn", reason="bad network")
    api.services.publisher.publish()
    assert not get(api, "/v1/check?ip=198.51.100.7", "proxy").json()["allowed"]
    r = httpx.post(api.url + "/v1/admin/allowlist", headers=api.headers("admin"),
                   json={"kind": "cidr", "value": "198.51.100.0/24", "reason": "our office"})
    assert r.status_code == 201 and r.json()["revoked"] == 1       # the ASN ban covered our office
    c = get(api, "/v1/check?ip=198.51.100.7", "proxy").json()
    assert c["allowed"] and c["tier"] == "anonymous"


def test_reads_do_not_wait_for_a_job_holding_the_store(api):
    api.ban("192.0.2.77")
    api.services.publisher.publish()
    with api.services.lock:                 # as an ingest run holds it, for seconds
        assert not get(api, "/v1/check?ip=192.0.2.77", "proxy", timeout=5).json()["allowed"]
        assert "pullwarden_active_bans 1" in get(api, "/metrics", "viewer", timeout=5).text
        assert get(api, "/v1/decisions?ip=192.0.2.77", "proxy", timeout=5).json()[0]["value"] == "192.0.2.77"
    # the budget is a month-wide aggregate: it waits for the job (services.analytics())
    assert get(api, "/v1/stats/budget", "viewer", timeout=5).json()["budget_tib"] == 100

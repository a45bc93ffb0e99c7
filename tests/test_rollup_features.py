"""Rollups are incremental and exact; features mean what rules/FEATURES.md says."""
from __future__ import annotations

from datetime import timedelta

import pytest

from core.store import open_store
from rules import features
from rules.rollup import prefix_of, roll_up
from tests.detect_helpers import T0, add_events, ev, storm


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "db.duckdb"))
    yield s
    s.close()


def test_rollups_are_incremental_and_count_late_events_once(store):
    add_events(store, storm("203.0.113.7", hours=2))
    assert roll_up(store) > 0
    assert roll_up(store) == 0                                   # re-running adds nothing
    before = store.value("select sum(requests) from facts_hourly")
    add_events(store, [ev(T0 + timedelta(minutes=5), "203.0.113.7")])   # a late line for the first hour
    roll_up(store)
    assert store.value("select sum(requests) from facts_hourly") == before + 1
    assert store.value("select sum(requests) from facts_hourly where hour = ?", [T0]) == 4 * 4 + 1
    assert store.value("select sum(requests) from facts_hourly") == store.value("select count(*) from events")


def test_rollup_in_slices_gives_the_same_features(tmp_path):
    """serve rolls a backlog up in slices of events (rules.rollup.SERVE_BATCH): a group split
    across slices is two partial rows, summed again by the feature queries."""
    out = []
    for name, batch in (("whole", None), ("sliced", 7)):
        s = open_store(str(tmp_path / f"{name}.duckdb"))
        add_events(s, storm("203.0.113.7", hours=3, per_hour=2, blobs=2) + storm("198.51.100.1", hours=2))
        assert roll_up(s, batch) == s.value("select count(*) from events")
        out.append(sorted(tuple(r.items()) for r in features.compute(s, "address", "24h", T0 + timedelta(hours=3))))
        s.close()
    assert out[0] == out[1]


def test_prefixes():
    assert prefix_of("203.0.113.7") == "203.0.113.0/24"
    assert prefix_of("2001:db8:5:1:a:b:c:d") == "2001:db8:5:1::/64"
    assert prefix_of("garbage") is None


def test_feature_values(store):
    ip, office = "203.0.113.7", "198.51.100.1"
    rows = storm(ip, hours=24, per_hour=2, blobs=2)              # 24 h x 2 pulls x 2 blobs, every blob each time
    for n in range(20):                                          # an office: 20 docker versions, 10:00-11:59
        t = T0 + timedelta(hours=10 + n % 2, minutes=n)
        rows += [ev(t, office, "manifest", nbytes=1500, ua=f"docker/2{n % 10}.0.{n}"),
                 ev(t, office, digest=f"sha256:{n:02d}", ua=f"docker/2{n % 10}.0.{n}", xff=f"10.0.0.{n % 4}"),
                 ev(t, office, "tags", status=404, nbytes=0, ua=f"docker/2{n % 10}.0.{n}")]
    add_events(store, rows)
    store.execute("insert into user_agents values ('docker/27.3.1', 'docker', '27.3.1', null)")
    store.execute("""insert into user_agents select distinct user_agent, 'docker', split_part(user_agent, '/', 2), null
                     from events where user_agent like 'docker/2%.0.%'""")
    store.execute("insert into ip_info values (?, 16509, 'AMAZON-02', 'US')", [ip])
    roll_up(store)
    got = {r["entity"]: r for r in features.compute(store, "address", "24h", T0 + timedelta(hours=23),
                                                    hosting=[16509])}
    ci, off = got[ip], got[office]
    assert (ci["requests"], ci["pulls"], ci["blob_gets"], ci["blobs"]) == (144, 48, 96, 2)
    assert ci["repeat_ratio"] == pytest.approx(48) and ci["max_blob_downloads"] == 48
    assert (ci["active_hours"], ci["blob_hours"], ci["hours_of_day"]) == (24, 24, 24)
    assert (ci["ua_strings"], ci["top_ua_share"], ci["asn"], ci["hosting"]) == (1, 1.0, 16509, 1)
    assert (off["ua_strings"], off["docker_versions"], off["hours_of_day"], off["xff_values"]) == (20, 20, 2, 4)
    assert off["xff_share"] == pytest.approx(1 / 3) and off["enum_share"] == pytest.approx(1 / 3)
    assert (off["errors"], off["error_share"]) == (20, pytest.approx(1 / 3))
    assert off["repeat_ratio"] == pytest.approx(1) and off["hosting"] == 0
    total = ci["bytes"] + off["bytes"]
    assert ci["byte_share"] == pytest.approx(ci["bytes"] / total)
    prefix = features.compute(store, "prefix", "24h", T0 + timedelta(hours=23))
    assert {r["entity"]: r["addresses"] for r in prefix} == {"203.0.113.0/24": 1, "198.51.100.0/24": 1}
    images = {r["entity"]: r["pulls"] for r in features.compute(store, "image", "24h", T0 + timedelta(hours=23))}
    assert images == {"docker.io/library/python": 68}
    # the window ends with the hour that contains `now`: an hour later the first hour drops out
    later = {r["entity"]: r for r in features.compute(store, "address", "24h", T0 + timedelta(hours=24))}
    assert later[ip]["requests"] == 144 - 6


def test_relay_shape_features(store):
    """A relay (pulls every hour, many namespaces, the same blob again and again) beside an office
    (a working day, each blob once per developer) and a pull-through cache (each blob once)."""
    relay, office, cache = "203.0.113.9", "198.51.100.2", "192.0.2.3"
    rows = []
    for h in range(24):                                          # the relay: 24 hours, 2 pulls an hour
        for k in range(2):
            t = T0 + timedelta(hours=h, minutes=20 * k)
            repo = f"ns{(2 * h + k) % 12}/app"                   # 12 namespaces, 12 images
            rows += [ev(t, relay, "manifest", nbytes=1500, repo=repo, ua=None),
                     ev(t, relay, digest=f"sha256:{(2 * h + k) % 3}", repo=repo, ua=None)]
    rows += [ev(T0 + timedelta(hours=3), relay, "manifest", nbytes=1500, ua=None)] * 2  # hour 3: busier
    for h in range(9, 19):                                       # the office: 09-18, a new blob each pull
        t = T0 + timedelta(hours=h)
        rows += [ev(t, office, "manifest", nbytes=1500), ev(t, office, digest=f"sha256:o{h}"),
                 ev(t + timedelta(minutes=1), office, digest=f"sha256:o{h}")]   # twice in one hour: again
    for h in range(24):
        rows += [ev(T0 + timedelta(hours=h), cache, "manifest", nbytes=1500, repo=f"lib/i{h}"),
                 ev(T0 + timedelta(hours=h), cache, digest=f"sha256:c{h}", repo=f"lib/i{h}")]
    add_events(store, rows)
    store.execute("insert into ip_info values (?, 24940, 'HETZNER-ONLINE', 'DE'), (?, 4134, 'CHINANET', 'CN'), "
                  "(?, 4134, 'CHINANET', 'CN')", [relay, office, cache])
    roll_up(store)
    got = {r["entity"]: r for r in features.compute(store, "address", "24h", T0 + timedelta(hours=23),
                                                    hosting=[24940])}
    r, o, c = got[relay], got[office], got[cache]
    assert (r["pull_hours"], r["images"], r["namespaces"], r["registries"]) == (24, 13, 13, 1)
    # without the window's last hour (23:00, under way live): 48 pulls, the 8 quietest hours hold 16
    assert r["quiet_share"] == pytest.approx(16 / 48) and o["quiet_share"] == 0
    assert c["quiet_share"] == pytest.approx(8 / 23)            # this cache is flat: its blobs tell it apart
    # the relay's three blobs: first fetched in hours 0 and 1, every later hour downloads one again
    assert (r["redownload_hours"], r["downloads_per_blob"]) == (23, pytest.approx(48 / 3))
    assert r["blobs_per_pull"] == pytest.approx(48 / 50) and r["hosting"] == 1
    assert (o["pull_hours"], o["redownload_hours"], o["downloads_per_blob"]) == (10, 10, 2)
    assert (c["pull_hours"], c["redownload_hours"], c["downloads_per_blob"], c["namespaces"]) == (24, 0, 1, 1)
    # the office and the cache share one ASN; the relay is alone in its own
    assert (r["asn_addresses"], r["asn_share"]) == (1, 1)
    total = o["bytes"] + c["bytes"]
    assert o["asn_addresses"] == 2 and o["asn_share"] == pytest.approx(o["bytes"] / total)

"""The demo tells the operator's whole story (issue 23), piece by piece without running the whole
month (test_first_run runs `pullwarden demo`, test_dashboard_browser the pages): the committed
ASN and country databases are the ones sample_logs/demo_geo.py writes, the demo uses them and its
budget only where the operator set none, a redirect-mode day has the buckets' logs, people read
one line per decided entity and times to the second in report_timezone."""
from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

import maxminddb

from cli.demo import DEMO_BUDGET_TIB, demo_budget, demo_settings
from core.decided import by_entity
from core.settings import load
from core.store import open_store
from core.when import human
from enforcer.changes import set_budget
from sample_logs import demo_geo
from sample_logs.month import OBJECTS, REDIRECT_DAYS, STORES, write_month

NOW = datetime(2026, 11, 27, 12, 0, 0)


def _ends(cidr: str) -> list[str]:
    net = ipaddress.ip_network(cidr)
    return [str(net[0]), str(net[-1])]


def test_the_committed_databases_are_what_the_script_writes(tmp_path):
    asn, country = demo_geo.networks()
    built = demo_geo.write(tmp_path)
    for committed, fresh, nets in ((demo_geo.ASN_DB, built[0], asn), (demo_geo.COUNTRY_DB, built[1], country)):
        assert committed.stat().st_size < 8192                       # a few KB, fit to commit
        with maxminddb.open_database(str(committed)) as a, maxminddb.open_database(str(fresh)) as b:
            for cidr, record in nets.items():
                for ip in _ends(cidr):
                    want = record
                    if cidr not in demo_geo.CAMPUS_NETS and any(ipaddress.ip_address(ip) in ipaddress.ip_network(c)
                                                                for c in demo_geo.CAMPUS_NETS):
                        continue                                       # inside the campus carve-out
                    assert a.get(ip) == b.get(ip) == want, (committed.name, ip)
    with maxminddb.open_database(str(demo_geo.ASN_DB)) as a:
        names = {a.get(_ends(c)[0])["autonomous_system_organization"] for c in asn}
    # clouds, hosting, ISPs, a mobile carrier and a campus
    assert {"AMAZON-02", "HETZNER-ONLINE", "DIGITALOCEAN-ASN", "CHINANET-BACKBONE", "CMNET", "CERNET-AP"} <= names


def test_the_demo_uses_its_databases_and_budget_only_where_the_operator_set_none(tmp_path):
    cfg = load(None, {"db": str(tmp_path / "a.duckdb")}, environ={})
    demo_settings(cfg)
    assert (cfg.asn_db, cfg.country_db) == (str(demo_geo.ASN_DB), str(demo_geo.COUNTRY_DB))
    own = load(None, {"db": str(tmp_path / "b.duckdb"), "asn_db": "/srv/GeoLite2-ASN.mmdb"}, environ={})
    demo_settings(own)
    assert own.asn_db == "/srv/GeoLite2-ASN.mmdb" and own.country_db == str(demo_geo.COUNTRY_DB)

    store = open_store(cfg.db)
    try:
        demo_budget(store, NOW)
        assert store.value("select value from kv where key = 'monthly_budget_tib'") == str(DEMO_BUDGET_TIB)
        assert store.value("select actor from audit where action = 'set budget'") == "pullwarden demo"
    finally:
        store.close()
    store = open_store(own.db)
    try:
        set_budget(store, "admin", 100.0, "what we can pay for", NOW)     # the stock figure, set on purpose
        demo_budget(store, NOW)
        assert store.value("select value from kv where key = 'monthly_budget_tib'") == "100.0"
    finally:
        store.close()


def test_the_redirect_days_write_the_buckets_logs(tmp_path):
    """One day is enough to check: its proxy log answers blob GETs with 307, and each bucket's log
    of that day holds the downloads."""
    write_month(tmp_path, NOW, days=1)
    day = NOW.replace(hour=0) - timedelta(days=1)
    proxy = (tmp_path / f"access.log-{day:%Y%m%d}").read_text().splitlines()
    assert REDIRECT_DAYS >= 1 and any('/blobs/sha256:' in line and '" 307 ' in line for line in proxy)
    assert not any('/blobs/sha256:' in line and '"GET' in line and '" 200 ' in line for line in proxy)
    for store, name in STORES.items():
        log = tmp_path / OBJECTS / store / name.format(day=day)
        assert log.is_file() and len(log.read_text().splitlines()) > 100, log


def test_one_line_per_entity_with_every_rule():
    rows = [
        {"id": 1, "scope": "ip", "value": "198.19.0.21", "effect": "ban", "tier": None, "rule": "reseller-proxy",
         "reason": "serves downstream clients", "until": datetime(2026, 12, 8, 3, 40)},
        {"id": 2, "scope": "ip", "value": "198.19.0.21", "effect": "ban", "tier": None, "rule": "reseller-relay",
         "reason": "relays the mirror", "until": datetime(2026, 12, 8, 3, 40)},
        {"id": 3, "scope": "ip", "value": "198.19.64.11", "effect": "ban", "tier": None, "rule": "tag-scanner",
         "reason": "enumerated", "until": datetime(2026, 12, 8, 3, 40)},
        {"id": 4, "scope": "ip", "value": "198.19.64.11", "effect": "ban", "tier": None, "rule": "error-storm",
         "reason": "778 errors", "until": datetime(2026, 12, 9, 3, 40)},
        {"id": 5, "scope": "ip", "value": "198.18.0.11", "effect": "throttle", "tier": "throttled",
         "rule": "ci-repull-storm", "reason": "re-downloaded", "until": datetime(2026, 12, 7, 9, 40)},
        {"id": 6, "scope": "ip", "value": "198.18.0.11", "effect": "ban", "tier": None, "rule": None,
         "reason": "an admin's", "until": datetime(2026, 12, 7, 5, 0)},
    ]
    got = {g["value"]: g for g in by_entity(rows)}
    assert len(got) == 3
    assert got["198.19.0.21"]["rules"] == ["reseller-proxy", "reseller-relay"] and got["198.19.0.21"]["ids"] == [1, 2]
    # the latest end first, and the entity ends when its last decision does
    assert got["198.19.64.11"]["rules"] == ["error-storm", "tag-scanner"]
    assert got["198.19.64.11"]["until"] == datetime(2026, 12, 9, 3, 40)
    # a ban outranks a throttle, whatever its end
    assert (got["198.18.0.11"]["effect"], got["198.18.0.11"]["rules"]) == ("ban", ["(admin)", "ci-repull-storm"])
    assert got["198.18.0.11"]["until"] == datetime(2026, 12, 7, 9, 40)
    # held and in force are not one line
    held = by_entity(rows[:2], lambda r: "held" if r["id"] == 2 else "in force")
    assert [(g["state"], g["rules"]) for g in held] == [("held", ["reseller-relay"]), ("in force", ["reseller-proxy"])]


def test_times_for_people_are_to_the_second_in_the_report_timezone():
    t = datetime(2026, 12, 6, 23, 39, 42, 705884)
    assert human(t) == "2026-12-06 23:39:42 UTC"
    assert human(t, "Europe/Berlin") == "2026-12-07 00:39:42 CET"
    assert human("2026-12-06T23:39:42.705884", "Asia/Shanghai") == "2026-12-07 07:39:42 CST"
    assert human("2026-12-06 23:39:42.705884+00:00", "America/New_York") == "2026-12-06 18:39:42 EST"
    assert human(None) == "" and human("forever") == "forever"

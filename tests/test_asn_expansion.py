"""AS-number bans at every proxy (issue 20 §3): serve expands a banned AS number into its
networks from the configured ASN database (a small tree built here with mmdb-writer), so real
nginx's geo and CRProxy's block list refuse what /v1/check refuses; the allowlist is cut out;
an AS too big for CRProxy's exact-address list is said by unexpressed(); a new database file
is read again. Before, only /v1/check and the CrowdSec stream enforced them."""
from __future__ import annotations

import csv
import gzip
import io
import ipaddress
import json
import os
from pathlib import Path

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet

from enforcer import asnets, changes
from enforcer.asnets import ASNetworks
from enforcer.render import render, unexpressed
from tests.enforcer_helpers import Enforcer, free_port
from tests.nginx_helpers import needs_nginx, nginx


def build(path: Path, networks: dict[int, list[str]]) -> Path:
    w = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    for asn, nets in networks.items():
        w.insert_network(IPSet([IPNetwork(n) for n in nets]),
                         {"autonomous_system_number": asn, "autonomous_system_organization": f"EXAMPLE-{asn}"})
    w.to_db_file(str(path))
    return path


TREE = {
    64500: ["198.51.100.0/24", "198.51.101.0/25", "2001:db8:100::/48"],
    64501: ["203.0.113.0/24"],                                      # not banned
    64503: [f"10.{i // 256}.{i % 256}.0/24" for i in range(300)],   # 76,800 addresses: too many for CRProxy
}
ADDRESSES = ["198.51.100.1", "198.51.100.77", "198.51.100.255", "198.51.101.5", "198.51.101.200", "203.0.113.5",
             "2001:db8:100::1", "2001:db8:101::1", "10.0.5.9", "10.1.43.1", "10.1.44.1", "::ffff:198.51.100.1"]


@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    e.db = build(tmp_path / "asn.mmdb", TREE)
    e.services.publisher.asn_networks = ASNetworks(str(e.db))     # what serve sets up from asn_db
    yield e
    e.stop()


def policy(api) -> dict:
    api.clock.advance(seconds=1)
    return json.loads(gzip.decompress(api.services.publisher.publish().body))


def install(api) -> dict:
    api.ban("64500", scope="asn", reason="a bad network")
    api.ban("64503", scope="asn", reason="a bigger one")
    with api.services.lock:
        changes.allow(api.store, "test", "ip", "198.51.100.77", "a customer", api.clock())
    return policy(api)


def test_banned_as_numbers_are_published_as_their_networks(api):
    p = install(api)
    nets = p["asn_networks"]
    assert set(nets) == {"64500", "64503"}
    assert "198.51.101.0/25" in nets["64500"] and "2001:db8:100::/48" in nets["64500"]
    assert "198.51.100.77/32" not in nets["64500"] and "198.51.100.76/32" in nets["64500"]     # allowlist cut out
    assert nets["64503"] == ["10.0.0.0/16", "10.1.0.0/19", "10.1.32.0/21", "10.1.40.0/22"]    # the fewest CIDRs
    files = render(p, warn=lambda m: None)
    http = files["nginx-pullwarden-http.conf"]
    assert "    198.51.101.0/25 banned;" in http and "    2001:db8:100::/48 banned;" in http
    assert '    198.51.101.0/25 "a bad network";' in http
    blocked = {row[0]: row[1] for row in csv.reader(io.StringIO(files["block-ips.csv"]))}
    assert blocked["198.51.100.1"] == blocked["198.51.101.5"] == "a bad network"
    assert "198.51.100.77" not in blocked and "198.51.101.200" not in blocked
    assert not any(a.startswith("10.") for a in blocked)      # AS64503 is too big: left out, and said so
    notes = unexpressed(p)
    assert any("CRProxy: 2 banned AS number(s) not wholly in block-ips.csv" in n and "AS64503" in n and "AS64500" in n for n in notes)


@needs_nginx
def test_nginx_crproxy_and_check_agree_on_every_address(api, tmp_path):
    p = install(api)
    files = render(p, warn=lambda m: None)
    blocked = {row[0] for row in csv.reader(io.StringIO(files["block-ips.csv"]))}
    written = {n for n, _ in asnets.expandable(p, 256)[0]}
    crproxy_left_out = {n for n, _, _ in asnets.banned(p)} - written
    port = free_port()
    servers = f"""server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location /v2/ {{ include {tmp_path}/location.conf; return 200 "$pullwarden_effective_tier"; }}
    }}"""
    h = api.headers("proxy")
    seen = []
    with nginx(tmp_path, files, servers, port), httpx.Client(base_url=f"http://127.0.0.1:{port}") as proxy:
        for ip in ADDRESSES:
            want = httpx.get(api.url + "/v1/check", headers=h, params={"ip": ip}).json()
            r = proxy.get("/v2/", headers={"X-Forwarded-For": ip})
            assert (r.status_code != 403) == want["allowed"], (ip, r.status_code, want)
            if r.status_code == 403:
                assert "banned by the mirror: a " in r.text
            addr = ipaddress.ip_address(ip)
            addr = addr.ipv4_mapped or addr if addr.version == 6 else addr
            if not any(addr.version == n.version and addr in n for n in crproxy_left_out):
                assert (str(addr) in blocked) == (not want["allowed"]), ip
            seen.append((ip, want["allowed"]))
    assert dict(seen) == {"198.51.100.1": False, "198.51.100.77": True, "198.51.100.255": False,
                          "198.51.101.5": False, "198.51.101.200": True, "203.0.113.5": True,
                          "2001:db8:100::1": False, "2001:db8:101::1": True, "10.0.5.9": False, "10.1.43.1": False,
                          "10.1.44.1": True, "::ffff:198.51.100.1": False}


def test_a_new_database_file_is_read_again(api, tmp_path):
    install(api)
    before = api.services.publisher.current.version
    assert api.services.publisher.refresh().version == before             # nothing changed: no new version
    build(api.db, {**TREE, 64500: TREE[64500] + ["192.0.2.0/24"]})
    st = os.stat(api.db)
    os.utime(api.db, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))        # a new file even within one mtime tick
    v = api.services.publisher.refresh()
    assert v.version == before + 1 and "192.0.2.0/24" in v.content["asn_networks"]["64500"]
    assert "asn_networks" in v.sections


def test_without_a_database_as_bans_are_said_unexpressed(tmp_path):
    e = Enforcer(tmp_path)
    try:
        e.ban("64500", scope="asn")
        p = json.loads(gzip.decompress(e.services.publisher.publish().body))
        assert p["asn_networks"] == {}
        assert any("1 AS-number ban(s) without networks (AS64500)" in n for n in unexpressed(p))
    finally:
        e.stop()


def test_a_damaged_database_is_tried_once_per_file(tmp_path, caplog):
    """Not read again at every publish (a full one takes seconds): only a new file is."""
    bad = tmp_path / "asn.mmdb"
    bad.write_bytes(b"not a maxmind database" * 50)
    nets = ASNetworks(str(bad))
    assert nets.networks(["64500"]) == {"64500": []} and nets.networks(["64500"]) == {"64500": []}
    assert len([r for r in caplog.records if "not a readable" in r.message]) == 1 and not nets.changed()
    build(bad, TREE)
    assert nets.changed() and "198.51.101.0/25" in nets.networks(["64500"])["64500"]


def test_an_agent_following_changes_gets_a_new_as_ban_s_networks(api):
    """The agent holds the whole policy once, then follows /v1/policy/changes: a change that bans
    an AS number carries asn_networks among its sections, and the agent's files ban them (the
    agent kept only the sections its check knew, and dropped this one)."""
    from enforcer.agent import poll
    policy(api)
    held = poll(api.url, api.keys["proxy"], None)
    assert not held.get("asn_networks")
    api.ban("64500", scope="asn", reason="a bad network")
    policy(api)
    held = poll(api.url, api.keys["proxy"], held)            # a change, not the whole policy
    assert "198.51.101.0/25" in held["asn_networks"]["64500"]
    http = render(held, warn=lambda m: None)["nginx-pullwarden-http.conf"]
    assert "    198.51.101.0/25 banned;" in http

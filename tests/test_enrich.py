"""ASN and country enrichment from MaxMind-format databases built here with mmdb-writer."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from core.geodb import EnrichError, GeoDB
from ingest.pipeline import IngestError
from tests.conftest import write

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "maxmind"
LINE = '{ip} - - [20/Nov/2024:10:00:0{n} +0000] "GET /v2/ HTTP/1.1" 401 87 "-" "curl/8.5.0" "-"'


def build(path: Path, db_type: str, networks: dict[str, dict]) -> Path:
    w = MMDBWriter(ip_version=6, database_type=db_type, ipv4_compatible=True)
    for cidr, record in networks.items():
        w.insert_network(IPSet([cidr]), record)
    w.to_db_file(str(path))
    return path


@pytest.fixture
def geolite(tmp_path):
    asn = build(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "198.51.100.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "EXAMPLE-CLOUD"},
        "2001:db8::/32": {"autonomous_system_number": 64501, "autonomous_system_organization": "EXAMPLE-V6"},
    })
    country = build(tmp_path / "country.mmdb", "GeoLite2-Country", {
        "198.51.100.0/24": {"country": {"iso_code": "CN", "names": {"en": "China"}}},
        "2001:db8::/32": {"country": {"iso_code": "DE"}},
    })
    return asn, country


def test_ingest_enriches_each_distinct_address_once(run, workdir, geolite):
    asn, country = geolite
    log = write(workdir / "a.log", [LINE.format(ip=ip, n=n) for n, ip in
                                    enumerate(["198.51.100.7", "198.51.100.7", "2001:db8::1", "203.0.113.1"])])
    r = run(asn_db=str(asn), country_db=str(country))
    report = r.ingest(log)
    assert report.notices == []
    rows = r.store.execute("select ip, asn, as_org, country from ip_info order by ip")
    assert rows == [("198.51.100.7", 64500, "EXAMPLE-CLOUD", "CN"),
                    ("2001:db8::1", 64501, "EXAMPLE-V6", "DE"),
                    ("203.0.113.1", None, None, None)]          # looked up, not in the database
    write(workdir / "b.log", [LINE.format(ip="198.51.100.7", n=5)])
    r.ingest(workdir / "b.log")
    assert r.store.value("select count(*) from ip_info") == 3


def test_ipinfo_lite_flat_fields(tmp_path):
    db = build(tmp_path / "ipinfo.mmdb", "ipinfo lite.mmdb", {
        "198.51.100.0/24": {"asn": "AS64500", "as_name": "Example Cloud", "as_domain": "example.com",
                            "country_code": "SG", "country": "Singapore"}})
    geo = GeoDB(asn_db=str(db))
    assert geo.lookup("198.51.100.9") == (64500, "Example Cloud", "SG")
    assert geo.lookup("not-an-ip") == (None, None, None)


def test_no_database_means_one_notice_and_null_columns(run, workdir):
    log = write(workdir / "a.log", [LINE.format(ip="198.51.100.7", n=1)])
    r = run()
    report = r.ingest(log)
    assert len(report.notices) == 1 and "no ASN or country database" in report.notices[0]
    assert r.store.value("select count(*) from ip_info") == 0


def test_corrupt_database_is_an_error_naming_the_file(run, workdir):
    bad = workdir / "broken.mmdb"
    bad.write_bytes(b"this is not a maxmind database" * 10)
    with pytest.raises(EnrichError, match="broken.mmdb"):
        GeoDB(asn_db=str(bad))
    log = write(workdir / "a.log", [LINE.format(ip="198.51.100.7", n=1)])
    r = run(asn_db=str(bad))
    from ingest.pipeline import Ingester
    with pytest.raises(IngestError, match="broken.mmdb"):
        Ingester(r.store, r.cfg).run([str(log)])
    assert r.store.value("select count(*) from events") == 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="MaxMind's test databases (../shared/testdata/maxmind) are not here")
def test_maxmind_own_test_databases():
    geo = GeoDB(asn_db=str(SHARED / "GeoLite2-ASN-Test.mmdb"), country_db=str(SHARED / "GeoLite2-Country-Test.mmdb"))
    asn, org, _ = geo.lookup("1.128.0.0")
    assert (asn, org) == (1221, "Telstra Pty Ltd")
    assert geo.lookup("2.125.160.216")[2] == "GB"
    with pytest.raises(EnrichError, match="Invalid-Node-Count"):
        geo2 = GeoDB(asn_db=str(SHARED / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"))
        geo2.lookup("1.1.1.1")


def damaged(path: Path) -> Path:
    """A database that opens but whose data section is garbage: its lookups fail."""
    import maxminddb
    good = build(path, "GeoLite2-ASN", {
        "198.51.100.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "EXAMPLE"}})
    data = bytearray(good.read_bytes())
    with maxminddb.open_database(str(good)) as r:
        m = r.metadata()
    start, end = m.node_count * m.record_size // 4 + 16, data.rfind(b"\xab\xcd\xefMaxMind.com")
    data[start:end] = b"\xff" * (end - start)
    path.write_bytes(bytes(data))
    return path


def test_a_database_that_fails_its_lookups_loses_no_event_and_is_named(run, workdir):
    bad = damaged(workdir / "damaged.mmdb")
    log = write(workdir / "a.log", [LINE.format(ip="198.51.100.7", n=1), LINE.format(ip="203.0.113.9", n=2)])
    r = run(asn_db=str(bad))
    report = r.ingest(log)
    assert report.total("events") == 2
    assert any("damaged.mmdb: corrupt database: 1 lookup(s) failed" in n for n in report.notices), report.notices
    # the address it failed on gets no row: a run with a repaired database looks it up again
    assert r.store.execute("select ip, asn from ip_info") == [("203.0.113.9", None)]
    write(workdir / "a.log", [LINE.format(ip="198.51.100.7", n=1), LINE.format(ip="203.0.113.9", n=2),
                              LINE.format(ip="198.51.100.8", n=3)])
    assert r.ingest(log).total("events") == 1                           # later runs are not stuck


@pytest.mark.skipif(not SHARED.is_dir(), reason="MaxMind's test databases (../shared/testdata/maxmind) are not here")
@pytest.mark.parametrize("name, ip", [("MaxMind-DB-test-broken-pointers-24.mmdb", "1.1.1.16"),
                                      ("GeoIP2-City-Test-Broken-Double-Format.mmdb", "81.2.69.160")])
def test_maxmind_broken_test_databases(name, ip):
    geo = GeoDB(country_db=str(SHARED / name))
    assert geo.lookup(ip) is None and name in geo.problems()[0]

"""A MaxMind database whose data section has a damaged string: the lookup fails with a
UnicodeDecodeError, which must count as a broken database, not as an address it lacks."""
from __future__ import annotations

from tests.conftest import write
from tests.test_enrich import LINE, build


def test_a_damaged_string_is_a_corrupt_database_and_the_address_is_looked_up_again(run, workdir):
    good = build(workdir / "asn.mmdb", "GeoLite2-ASN", {
        "198.51.100.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "EXAMPLE-CLOUD"}})
    data = bytearray(good.read_bytes())
    data[data.find(b"EXAMPLE-CLOUD") + 3] = 0xFF            # not UTF-8 any more
    bad = workdir / "bad.mmdb"
    bad.write_bytes(bytes(data))
    log = write(workdir / "a.log", [LINE.format(ip="198.51.100.7", n=1)])

    r = run(asn_db=str(bad))
    report = r.ingest(log)
    assert report.total("events") == 1                          # stored all the same
    (notice,) = [n for n in report.notices if "corrupt database" in n]
    assert notice.startswith(f"{bad}: corrupt database")
    assert r.store.value("select count(*) from ip_info") == 0   # no row: not taken for "not in it"

    r.cfg.values["asn_db"] = str(good)                           # the operator puts a good copy back
    r.ingest(log)
    assert r.store.execute("select ip, asn, as_org from ip_info") == [("198.51.100.7", 64500, "EXAMPLE-CLOUD")]

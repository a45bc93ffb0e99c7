"""The demo's ASN and country databases: MaxMind-format files (the layouts of GeoLite2-ASN and
GeoLite2-Country) for the addresses the demo month draws from, so that its AS and country
breakdowns have names and the rules that weigh hosting networks can say why they matched.

    python sample_logs/demo_geo.py        # rewrites demo-asn.mmdb and demo-country.mmdb beside it

The two files are committed (a few KB): `pullwarden demo` and `up` read them as they are, so
mmdb-writer stays a test dependency. tests/test_demo_story.py rebuilds them with this script
and checks that the committed ones answer the same for every network.

The networks are the scenario generator's (sample_logs/scenarios.py ``asn_networks``: clouds,
hosting, three Chinese ISPs, CMNET the mobile carrier), and one more specific: the AI user's /24
is a university's (CERNET), as a lab fetching CUDA images is.
"""
from __future__ import annotations

from pathlib import Path

from sample_logs.scenarios import BLOCKS, V4_NETS, V6_NETS, asn_networks

HERE = Path(__file__).resolve().parent
ASN_DB = HERE / "demo-asn.mmdb"
COUNTRY_DB = HERE / "demo-country.mmdb"

CAMPUS = {"autonomous_system_number": 4538, "autonomous_system_organization": "CERNET-AP"}
CAMPUS_NETS = BLOCKS["ai-user"]          # the lab's /24 inside the mobile carrier's block
# where each AS's addresses are (GeoLite2-Country spells a country by ISO code and English name)
COUNTRY = {16509: ("US", "United States"), 45102: ("SG", "Singapore"), 14061: ("NL", "Netherlands"),
           24940: ("DE", "Germany"), 4134: ("CN", "China"), 4837: ("CN", "China"), 9808: ("CN", "China"),
           4538: ("CN", "China")}


def networks() -> tuple[dict[str, dict], dict[str, dict]]:
    """CIDR -> GeoLite2-ASN record, and CIDR -> GeoLite2-Country record. The campus /24 comes
    after its mobile-carrier block: mmdb-writer lets a later, more specific insert win."""
    asn = {**asn_networks(), **dict.fromkeys(CAMPUS_NETS, CAMPUS)}
    by_number = {**{c: n for n, c in V4_NETS.items()}, **{c: n for n, c in V6_NETS.items()},
                 **dict.fromkeys(CAMPUS_NETS, CAMPUS["autonomous_system_number"])}
    country = {cidr: {"country": {"iso_code": COUNTRY[n][0], "names": {"en": COUNTRY[n][1]}}}
               for cidr, n in by_number.items()}
    return asn, country


def write(folder: Path = HERE) -> tuple[Path, Path]:
    """Write both databases into ``folder`` (needs mmdb-writer: `pip install -e .[test]`)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet
    asn, country = networks()
    out = []
    for name, db_type, nets in ((ASN_DB.name, "GeoLite2-ASN", asn), (COUNTRY_DB.name, "GeoLite2-Country", country)):
        w = MMDBWriter(ip_version=6, database_type=db_type, ipv4_compatible=True,
                       description="pullwarden demo: the demo month's address blocks only")
        for cidr, record in nets.items():
            w.insert_network(IPSet([cidr]), record)
        w.to_db_file(str(folder / name))
        out.append(folder / name)
    return out[0], out[1]


if __name__ == "__main__":
    for path in write():
        print(f"{path} ({path.stat().st_size:,} bytes)")

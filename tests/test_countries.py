"""Countries by name where a person reads them (core/countries.py): the monthly report's country
breakdown and top consumers, and the top talkers' labels the dashboard shows; the code stays
the key in JSON and CSV."""
from __future__ import annotations

import json
from pathlib import Path

import maxminddb
import pytest
from click.testing import CliRunner

from cli.main import cli
from core.countries import NAMES, label
from sample_logs import demo_geo

ISO = Path("/usr/share/iso-codes/json/iso_3166-1.json")


@pytest.mark.skipif(not ISO.exists(), reason="Debian's iso-codes is not installed")
def test_every_iso_3166_country_has_a_name():
    codes = {c["alpha_2"] for c in json.loads(ISO.read_text())["3166-1"]}
    assert set(NAMES) == codes | {"XK"}


def test_the_names_are_those_of_a_geolite2_country_database():
    # the demo's database is written in GeoLite2-Country's layout with MaxMind's English names
    with maxminddb.open_database(str(demo_geo.COUNTRY_DB)) as db:
        named = {rec["country"]["iso_code"]: rec["country"]["names"]["en"] for _, rec in db}
    assert len(named) >= 4 and {code: NAMES[code] for code in named} == named
    assert (NAMES["RU"], NAMES["KR"], NAMES["VN"]) == ("Russia", "South Korea", "Vietnam")     # not ISO's formal ones
    assert label("DE") == "Germany (DE)" and label("ZZ") == "ZZ" and label(None) is None


def invoke(*args) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={})
    assert res.exit_code == 0, res.output
    return res.stdout


def test_the_monthly_report_and_the_top_talkers_name_countries(tmp_path):
    blob = "sha256:" + "b" * 64
    lines = [f'{ip} - - [{day:02d}/Nov/2026:10:00:00 +0000] "GET /v2/library/nginx/blobs/{blob} HTTP/1.1" 200 '
             f'{size} "-" "docker/27.3.1"' for day in (10, 11) for ip, size in
             (("198.19.96.7", 9 << 30), ("198.19.128.9", 5 << 30), ("203.0.113.9", 1 << 30))]   # DE, CN, none
    (tmp_path / "access.log").write_text("\n".join(lines) + "\n")
    db = tmp_path / "db.duckdb"
    invoke("ingest", tmp_path / "access.log", "--db", db, "--country-db", demo_geo.COUNTRY_DB)
    out = tmp_path / "report"
    fig = json.loads(invoke("report", "monthly", "--db", db, "--month", "2026-11", "--now", "2026-11-30T00:00:00",
                            "--json", "--out", out))
    countries = fig["breakdowns"]["country"]
    assert [(r["key"], r["label"]) for r in countries] == [("DE", "Germany (DE)"), ("CN", "China (CN)"),
                                                           ("unknown", "unknown")]
    assert [r["country"] for r in fig["top_consumers"]] == ["DE", "CN", None]       # codes in the JSON
    page = (out / "pullwarden-report-2026-11.html").read_text()
    assert page.count("<td>Germany (DE)</td>") == 2 and page.count("<td>China (CN)</td>") == 2   # breakdown, top 20
    assert "<td>DE</td>" not in page

    from core.store import open_store
    from reports.queries import Span, top
    from datetime import datetime
    store = open_store(str(db))
    try:
        rows = top(store, "country", Span(datetime(2026, 11, 1), datetime(2026, 12, 1)), 10)["rows"]
    finally:
        store.close()
    assert [(r["entity"], r["label"]) for r in rows] == [("DE", "Germany (DE)"), ("CN", "China (CN)")]

"""The MaxMind-format reader: ASN and country of an address.

Reads GeoLite2-ASN / GeoLite2-Country, DB-IP Lite (same field names) and IPinfo Lite
(flat fields: ``asn`` "AS15169", ``as_name``, ``country_code``). Shared by ingest (ip_info,
looked up once per new address) and the enforcer (a replica's /v1/check, AS bans as networks):
it belongs to neither stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb


class EnrichError(Exception):
    """A database file that is missing or not a MaxMind-format database."""


def _open(path: str) -> maxminddb.Reader:
    if not Path(path).is_file():
        raise EnrichError(f"{path}: no such database file")
    try:
        return maxminddb.open_database(path)
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as e:
        raise EnrichError(f"{path}: not a valid MaxMind-format database ({e})") from None


def record_asn(rec: dict[str, Any]) -> tuple[int | None, str | None]:
    if "autonomous_system_number" in rec:
        return rec.get("autonomous_system_number"), rec.get("autonomous_system_organization")
    raw = rec.get("asn")
    if raw is None:
        return None, rec.get("as_name")
    text = str(raw).upper().removeprefix("AS")
    return (int(text) if text.isdigit() else None), rec.get("as_name")


def record_country(rec: dict[str, Any]) -> str | None:
    c = rec.get("country")
    if isinstance(c, dict):
        return c.get("iso_code")
    if rec.get("country_code"):
        return rec["country_code"]
    reg = rec.get("registered_country")
    return reg.get("iso_code") if isinstance(reg, dict) else None


class GeoDB:
    def __init__(self, asn_db: str = "", country_db: str = ""):
        self.asn = _open(asn_db) if asn_db else None
        self.country = _open(country_db) if country_db else None
        self.paths = {"asn": asn_db, "country": country_db}
        # lookups a damaged database failed: path -> [count, first error]. Those addresses get no
        # ip_info row and wait in ip_retry (enrich_new), so a run with a repaired database looks
        # them up again
        self.failures: dict[str, list] = {}

    def problems(self) -> list[str]:
        return [f"{path}: corrupt database: {n} lookup(s) failed, those addresses have no ASN/country "
                f"for now (first: {first})" for path, (n, first) in self.failures.items()]

    def _get(self, which: str, ip: str):
        reader = getattr(self, which)
        try:
            return reader.get(ip)
        except (maxminddb.InvalidDatabaseError, UnicodeDecodeError) as e:
            # a damaged string in the data section is a UnicodeDecodeError, which is a ValueError:
            # taken for "not in this database" it would store the address as looked up, for good
            seen = self.failures.setdefault(self.paths[which], [0, " ".join(str(e).split())[:160]])
            seen[0] += 1
            raise maxminddb.InvalidDatabaseError(str(e)) from None

    @property
    def configured(self) -> bool:
        return bool(self.asn or self.country)

    def lookup(self, ip: str) -> tuple[int | None, str | None, str | None] | None:
        """(asn, organization, country), or None when a database failed on this address."""
        asn = org = country = None
        try:
            if self.asn:
                rec = self._get("asn", ip)
                if isinstance(rec, dict):
                    asn, org = record_asn(rec)
                    country = record_country(rec)       # IPinfo Lite carries both in one file
            if self.country:
                rec = self._get("country", ip)
                if isinstance(rec, dict):
                    country = record_country(rec) or country
        except maxminddb.InvalidDatabaseError:
            return None
        except ValueError:                        # an IPv6 address in an IPv4-only database
            return None, None, None
        return asn, org, country

    def close(self) -> None:
        for r in (self.asn, self.country):
            if r:
                r.close()

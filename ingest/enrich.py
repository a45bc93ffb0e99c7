"""ASN and country per distinct client address, from MaxMind-format databases.

Reads GeoLite2-ASN / GeoLite2-Country, DB-IP Lite (same field names) and IPinfo Lite
(flat fields: ``asn`` "AS15169", ``as_name``, ``country_code``). Looked up once per new
address into ``ip_info``; events are never rewritten.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb

from ingest.useragent import classify


class EnrichError(Exception):
    """A database file that is missing or not a MaxMind-format database."""


def _open(path: str) -> maxminddb.Reader:
    if not Path(path).is_file():
        raise EnrichError(f"{path}: no such database file")
    try:
        return maxminddb.open_database(path)
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as e:
        raise EnrichError(f"{path}: not a valid MaxMind-format database ({e})") from None


def _asn(rec: dict[str, Any]) -> tuple[int | None, str | None]:
    if "autonomous_system_number" in rec:
        return rec.get("autonomous_system_number"), rec.get("autonomous_system_organization")
    raw = rec.get("asn")
    if raw is None:
        return None, rec.get("as_name")
    text = str(raw).upper().removeprefix("AS")
    return (int(text) if text.isdigit() else None), rec.get("as_name")


def _country(rec: dict[str, Any]) -> str | None:
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
        # ip_info row, so a run with a repaired database looks them up again
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
                    asn, org = _asn(rec)
                    country = _country(rec)       # IPinfo Lite carries both in one file
            if self.country:
                rec = self._get("country", ip)
                if isinstance(rec, dict):
                    country = _country(rec) or country
        except maxminddb.InvalidDatabaseError:
            return None
        except ValueError:                        # an IPv6 address in an IPv4-only database
            return None, None, None
        return asn, org, country

    def close(self) -> None:
        for r in (self.asn, self.country):
            if r:
                r.close()


def enrich_new(store, geo: GeoDB) -> dict[str, int]:
    """Classify new user agents and look up new addresses; returns how many of each."""
    # object-store downloads are rolled up too (rules/objectjoin.py): their downloading and
    # requesting addresses and user agents are looked up like the proxy's
    uas = [r[0] for r in store.execute("""
        select distinct ua from (select user_agent as ua from events
                                 union all select user_agent from object_events) e
        where ua is not null
          and not exists (select 1 from user_agents u where u.user_agent = e.ua)""")]
    if uas:
        _insert_columns(store, "user_agents", [(ua, *classify(ua)) for ua in uas],
                        ["varchar", "varchar", "varchar", "varchar"])
    ips: list[str] = []
    if geo.configured:
        ips = [r[0] for r in store.execute("""
            select distinct ip from (select client_ip as ip from events
                                     union all select client_ip from object_events
                                     union all select requester_ip from object_events) e
            where ip is not null and not exists (select 1 from ip_info i where i.ip = e.ip)""")]
        rows = [(ip, *found) for ip in ips if (found := geo.lookup(ip)) is not None]
        if rows:
            _insert_columns(store, "ip_info", rows, ["varchar", "integer", "varchar", "varchar"])
    return {"user_agents": len(uas), "addresses": len(ips)}


def _insert_columns(store, table: str, rows: list[tuple], types: list[str]) -> None:
    """Insert many rows as one statement: each column is one bound list, unnested side by side."""
    columns = list(zip(*rows))
    select = ", ".join(f"unnest(${i}::{t}[])" for i, t in enumerate(types, 1))
    store.execute(f"insert into {table} select {select}", [list(c) for c in columns])

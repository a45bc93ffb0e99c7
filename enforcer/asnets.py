"""AS-number bans as the networks of the AS, for the proxies that know only addresses.

nginx's geo and CRProxy's block list cannot look an address's AS number up; serve can, in the
configured ASN database (`asn_db`, the one ingest fills ip_info from, which /v1/check reads).
Each published policy carries, for every AS number banned, the networks the database gives
it (`asn_networks`, the allowlist cut out as for banned ranges), and every dialect bans those
as it bans ranges. The database is read whole once per file (path, mtime, size) into a compact
index, and again when the file changes; a lookup is then a dictionary access."""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from array import array

import maxminddb

from core.geodb import record_asn

log = logging.getLogger("pullwarden.asnets")


class ASNetworks:
    """AS number -> its networks, from one MaxMind-format ASN database file."""

    def __init__(self, path: str):
        self.path = path
        self.stamp: tuple | None = None     # (path, mtime, size) of the file last read, whether it could be or not
        # per AS number: IPv4 networks packed as address << 8 | prefix length in an array of
        # 64-bit integers (8 bytes each: GeoLite2-ASN's ~500,000 networks in a few MB), IPv6
        # ones in a list of Python integers
        self.v4: dict[int, array] = {}
        self.v6: dict[int, list[int]] = {}
        self.seconds = 0.0       # the last build's
        self.said = False        # that the file cannot be read
        self.building = threading.Lock()

    def load(self) -> None:
        """The index of the file as it is now: rebuilt when its path, mtime or size changed. A
        file that cannot be read leaves the last index (or none) and says so. One build at a
        time: the publish job reads a new file outside the policy lock, and a publish that
        comes meanwhile waits for it rather than taking the old index for the new file's."""
        with self.building:
            self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as e:
            if self.stamp is not None or not self.said:     # once, not at every publish
                log.error("asn_db %s: %s; AS-number bans keep the networks last read, if any", self.path, e)
                self.said = True
            self.stamp = None
            return
        stamp = (self.path, st.st_mtime_ns, st.st_size)
        if stamp == self.stamp:
            return
        self.stamp = stamp          # a damaged file is not read again at every publish: only a new one
        started = time.perf_counter()
        v4: dict[int, array] = {}
        v6: dict[int, list[int]] = {}
        try:
            with maxminddb.open_database(self.path) as reader:
                for net, rec in reader:
                    asn = record_asn(rec)[0] if isinstance(rec, dict) else None
                    if asn is None:
                        continue
                    packed = int(net.network_address) << 8 | net.prefixlen
                    if net.version == 4:
                        v4.setdefault(asn, array("Q")).append(packed)
                    else:
                        v6.setdefault(asn, []).append(packed)
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as e:
            log.error("asn_db %s: not a readable MaxMind-format database (%s); the last index stays", self.path, e)
            return
        self.v4, self.v6 = v4, v6
        self.seconds = time.perf_counter() - started
        log.info("asn_db %s: %d AS numbers indexed in %.1f s", self.path, len(v4.keys() | v6.keys()), self.seconds)

    def changed(self) -> bool:
        """Whether the file is no longer the one indexed (never true before a first index: with no
        AS number banned there is nothing to redo)."""
        if self.stamp is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (self.path, st.st_mtime_ns, st.st_size) != self.stamp

    def networks(self, asns) -> dict[str, list[str]]:
        """Each AS number (as text) -> its networks, the fewest CIDRs; [] when the database has
        none for it."""
        self.load()
        out = {}
        for a in asns:
            n = int(a) if str(a).isdigit() else -1
            nets = [ipaddress.IPv4Network((p >> 8, p & 0xFF)) for p in self.v4.get(n, ())]
            nets6 = [ipaddress.IPv6Network((p >> 8, p & 0xFF)) for p in self.v6.get(n, ())]
            out[str(a)] = [str(x) for x in ipaddress.collapse_addresses(nets)] + \
                          [str(x) for x in ipaddress.collapse_addresses(nets6)]
        return out


def section(store, now, expander: ASNetworks | None, carve, allowed: list) -> dict[str, list[str]]:
    """The policy's `asn_networks`: the networks of every AS number banned in force, the
    allowlisted networks cut out (``carve``, as for banned ranges); {} without a database."""
    if expander is None:
        return {}
    asns = [v for (v,) in store.execute("""
        select distinct value from decisions
        where effect = 'ban' and scope = 'asn' and revoked_at is null and not simulated and held is null
          and until > ? order by value""", [now])]
    if not asns:
        return {}
    out = {}
    for asn, nets in expander.networks(asns).items():
        pieces = []
        for text in nets:
            net = ipaddress.ip_network(text)
            inside = [a for a in allowed if a.version == net.version and a.overlaps(net)]
            pieces += [str(p) for p in carve(net, inside)] if inside else [text]
        out[asn] = pieces
    return out


# ---- for the renderers: pure functions of the policy document --------------------------------

AS_EXPAND_MAX = 65_536      # addresses of one AS written into CRProxy's exact-address list, at most


def banned(policy: dict) -> list[tuple]:
    """(network, reason, AS number) of every banned AS's published networks."""
    nets = policy.get("asn_networks") or {}
    out = []
    for e in policy["bans"].values():
        if e["scope"] == "asn":
            out += [(ipaddress.ip_network(n), e["reason"], e["value"]) for n in nets.get(e["value"], ())]
    return out


def expandable(policy: dict, per_range: int) -> tuple[list[tuple], list[str]]:
    """What of the banned ASes CRProxy's list of exact addresses can take: (network, reason) for
    the networks of at most ``per_range`` addresses, of each AS whose such networks add up to at
    most AS_EXPAND_MAX addresses (beyond that, none of them); and a line for each AS with
    networks left out, saying which."""
    by_as: dict[str, list[tuple]] = {}
    for net, reason, asn in banned(policy):
        by_as.setdefault(asn, []).append((net, reason))
    kept, notes = [], []
    for asn, nets in sorted(by_as.items()):
        small = [(n, r) for n, r in nets if n.num_addresses <= per_range]
        wide = [n for n, _ in nets if n.num_addresses > per_range]
        total = sum(n.num_addresses for n, _ in small)
        if total > AS_EXPAND_MAX:
            notes.append(f"AS{asn} (all {len(nets)} network(s): {total:,} addresses in the small ones alone)")
            continue
        kept += small
        if wide:
            notes.append(f"AS{asn} ({len(wide)} of {len(nets)} network(s) wider than {per_range} addresses, "
                         f"e.g. {wide[0]})")
    return kept, notes

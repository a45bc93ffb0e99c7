"""The allowlist: addresses, ranges, ASNs and users that no decision may touch. Shared by the
policy layer (detection) and the enforcer's admin API."""
from __future__ import annotations

import ipaddress
from datetime import datetime


def net(value: str):
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


class Allowlist:
    """Entries in force at ``now``: ip, cidr, asn, user."""

    def __init__(self, store, now: datetime):
        self.entries = store.execute("""select kind, value, reason from allowlist
                                        where until is null or until > ?""", [now])
        self.nets = [(net(v), r) for k, v, r in self.entries if k in ("ip", "cidr") and net(v)]
        self.asns = {v: r for k, v, r in self.entries if k == "asn"}
        self.users = {v: r for k, v, r in self.entries if k == "user"}
        self.store = store

    def covers(self, scope: str, value: str) -> str | None:
        """Why a decision (scope, value) must not be made, or None."""
        if scope in ("ip", "range"):
            # a range that only contains allowlisted addresses is not covered: it is banned, and
            # published with them cut out (enforcer/snapshot.py carve())
            target = net(value)
            for allowed, reason in self.nets:
                if target and allowed.version == target.version and target.subnet_of(allowed):
                    return reason
            if scope == "ip" and self.asns:        # a lookup per finding only when ASNs are allowed
                asn = self.store.value("select asn from ip_info where ip = ?", [value])
                if asn is not None and str(asn) in self.asns:
                    return self.asns[str(asn)]
        if scope == "asn":
            if value in self.asns:
                return self.asns[value]
            # an ASN decision would also hit allowlisted addresses inside that network
            if self.nets:
                for (ip,) in self.store.execute("select ip from ip_info where cast(asn as varchar) = ?", [value]):
                    target = net(ip)
                    for allowed, reason in self.nets:
                        if target and allowed.version == target.version and allowed.overlaps(target):
                            return reason
        if scope == "user" and value in self.users:
            return self.users[value]
        return None


def revoke_allowlisted(store, kind: str, value: str, now: datetime) -> int:
    """A new allowlist entry revokes the decisions in force it covers wholly; returns how many.
    A banned range around it stays banned for everyone else. (Held ones stay held: approving
    one the allowlist covers is refused.)"""
    allow = Allowlist(store, now)
    rows = store.execute("select id, scope, value from decisions where revoked_at is null and held is null "
                         "and until > ?", [now])
    ids = [i for i, scope, v in rows if allow.covers(scope, v)]
    for i in ids:
        store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?", [now, i])
    return len(ids)

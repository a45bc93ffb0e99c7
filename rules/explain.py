"""`pullwarden explain`: every rule's verdict on one address or range, with the numbers."""
from __future__ import annotations

import ipaddress
from datetime import datetime

from core.allowlist import Allowlist
from rules import features
from core.types import parse_duration
from rules.engine import Rule
from rules.features import SCOPE_OF
from rules.nearest import conditions, failing
from rules.policy import unban_note, unbanned_at
from rules.rollup import prefix_of, roll_up


def _target(text: str) -> tuple[str, str]:
    """(entity kind, canonical value) of an address or a /24 / /64 range."""
    try:
        return "address", str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is neither an address nor a range") from None
    if net.prefixlen != (24 if net.version == 4 else 64):
        raise ValueError(f"{text}: ranges are judged as /24 (IPv4) or /64 (IPv6) prefixes")
    return "prefix", str(net)


def explain(store, settings, rules: list[Rule], text: str, now: datetime, roll: bool = True) -> dict:
    """``roll``: bring the roll-ups up to date first (serve's ingest job does that itself, and
    its API reads on a connection of its own that must not write)."""
    kind, value = _target(text)
    if roll:
        roll_up(store, settings=settings)
    if not store.value("select count(*) from events"):
        raise ValueError("no events yet: ingest some logs first")
    cols = ["entity", *features.NAMES]
    verdicts = []
    for rule in sorted((r for r in rules if r.entity == kind), key=lambda r: (r.pack, r.name)):
        start, end = features.window_bounds(now, rule.window)
        row = store.execute(f"""
            select *, coalesce(({rule.where})::boolean, false) from ({features.features_sql(kind)})
            where entity = $target""",
            {"start": start, "end": end, "hosting": list(settings.hosting_asns), "target": value})
        values = dict(zip(cols, row[0][:-1])) if row else {}
        match = bool(row and row[0][-1])
        # the no-match side: which conditions failed, and how far each was from its threshold
        missed = failing(store, rule.where, values) if values and not match else []
        [ended] = unbanned_at(store, [(SCOPE_OF[kind], value, rule.name)])
        unbanned = unban_note(rule, ended) if ended and now - parse_duration(rule.window) < ended else None
        verdicts.append({"rule": rule.name, "pack": rule.pack, "window": rule.window, "action": rule.action,
                         "simulated": rule.simulate, "match": match, "where": rule.where,
                         "reason": rule.explain(values) if values else None, "features": values,
                         "unbanned": unbanned, "failing": missed, "conditions": conditions(store, rule.where)})
    start, end = features.window_bounds(now, "24h")
    who = ("client_ip = $v" if kind == "address" else
           "client_ip in (select ip from ip_prefix where prefix = $v)")
    p = {"s": start, "e": end, "v": value}
    top_images = [{"image": f"{r}/{n}", "requests": q} for r, n, q in store.execute(f"""
        select registry, repository, sum(requests) as q from facts_hourly
        where hour >= $s and hour < $e and {who} and repository is not null
        group by all order by q desc limit 5""", p)]
    top_uas = [{"user_agent": u, "requests": q} for u, q in store.execute(f"""
        select coalesce(user_agent, '(none)'), sum(requests) as q from facts_hourly
        where hour >= $s and hour < $e and {who} group by all order by q desc limit 5""", p)]
    per_hour = dict(store.execute(f"""
        select hour, sum(requests) from facts_hourly where hour >= $s and hour < $e and {who} group by all""", p))
    hours = [start + (end - start) * i / 24 for i in range(24)]
    allowed = Allowlist(store, now).covers("ip" if kind == "address" else "range", value)
    return {"target": value, "entity_kind": kind, "now": now, "prefix": prefix_of(value) if kind == "address" else value,
            "in_force": in_force(store, kind, value, now), "allowlisted": allowed,
            "verdicts": verdicts, "top_images": top_images, "top_user_agents": top_uas,
            "hourly": [int(per_hour.get(h, 0)) for h in hours]}


def in_force(store, kind: str, value: str, now: datetime) -> list[dict]:
    """The decisions live at ``now`` that reach the entity, held ones included (marked): on the
    address or prefix itself, a range around it, its AS number; for a prefix also the
    addresses banned inside it. Manual ones say so (rule null, origin manual)."""
    target = ipaddress.ip_network(value, strict=False)
    asn = store.value("select cast(asn as varchar) from ip_info where ip = ?", [value]) if kind == "address" else None
    # an address's own bans by value in SQL (a mirror may have 100,000 of them); ranges, and a
    # prefix's addresses, are compared as networks in Python
    rows = store.records("""
        select id, scope, value, effect, tier, rule, origin, reason, created_at, until, held, simulated
        from decisions where revoked_at is null and created_at <= $now and until > $now
          and ((scope = 'ip' and ($kind = 'prefix' or value = $v)) or scope = 'range'
               or (scope = 'asn' and value = $asn))
        order by created_at""", {"now": now, "v": value, "asn": asn, "kind": kind})

    def reaches(r) -> bool:
        if r["scope"] == "asn" or (r["scope"] == "ip" and kind == "address"):
            return True
        net = ipaddress.ip_network(r["value"], strict=False)
        return net.version == target.version and (target.subnet_of(net) or net.subnet_of(target))
    return [r for r in rows if reaches(r)]

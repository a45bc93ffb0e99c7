"""Admin changes, written once for the API and the command line: each validates, changes the
store, and lands in the audit log (who, when, what, why). A ValueError says what is wrong.
The caller holds the store and publishes afterwards."""
from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta

from core.allowlist import Allowlist, revoke_allowlisted
from core.types import parse_duration

SCOPES = ("ip", "range", "asn", "user")
LISTS = ("allowed", "unlimited", "blocked")
TIER_FIELDS = ("requests_per_minute", "burst", "concurrent", "blob_bytes_per_second", "window_bytes", "window_seconds")


def seconds(text: str) -> int:
    n = int(parse_duration(text).total_seconds())
    if n <= 0:
        raise ValueError(f"bad duration {text!r}: it must be positive")
    return n


def canonical(scope: str, value: str) -> str:
    try:
        if scope == "ip":
            addr = ipaddress.ip_address(value)
            return str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)
        if scope in ("range", "cidr"):
            net = ipaddress.ip_network(value, strict=False)
            if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped:
                net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
            return str(net)
    except ValueError:
        raise ValueError(f"not a valid {scope}: {value!r}") from None
    if scope == "asn":
        if not value.removeprefix("AS").isdigit():
            raise ValueError(f"not an AS number: {value!r}")
        return value.removeprefix("AS")
    if scope not in ("user",):
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    return value


def audit(store, actor: str, action: str, target: str | None, details: dict, reason: str | None,
          now: datetime) -> None:
    store.execute("insert into audit values (?, ?, ?, ?, ?, ?)",
                  [now, actor, action, target, json.dumps(details, default=str), reason])


def _tier_exists(store, tier: str | None) -> bool:
    return bool(tier) and bool(store.value("select count(*) from tiers where name = ?", [tier]))


def add_decision(store, actor: str, scope: str, value: str, effect: str, duration: str, reason: str,
                 now: datetime, tier: str | None = None) -> int:
    """A manual ban, or a tier assignment (throttle, or boost for a generous tier)."""
    value = canonical(scope, value)
    span = seconds(duration)
    if effect != "ban" and not _tier_exists(store, tier):
        raise ValueError(f"unknown tier {tier!r}")
    new_id = store.value("""
        insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, evidence, created_at, until)
        values (nextval('decision_seq'), ?, ?, ?, ?, null, 'manual', ?, ?, ?, ?) returning id""",
        [scope, value, effect, tier if effect != "ban" else None, reason, json.dumps({"by": actor}), now,
         now + timedelta(seconds=span)])
    audit(store, actor, f"add {effect}", f"{scope} {value}", {"duration": duration, "tier": tier, "id": new_id},
          reason, now)
    return new_id


def assignment_effect(tier: str) -> str:
    return "boost" if tier in ("unlimited", "authenticated") else "throttle"


def revoke(store, actor: str, decision_id: int, reason: str, now: datetime) -> None:
    row = store.execute("select scope, value, effect from decisions where id = ? and revoked_at is null", [decision_id])
    if not row:
        raise LookupError(f"no decision #{decision_id} in force")
    store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?", [now, decision_id])
    audit(store, actor, f"revoke {row[0][2]}", f"{row[0][0]} {row[0][1]}", {"id": decision_id}, reason, now)


def held_ids(store, rule: str) -> list[int]:
    """The decisions of ``rule`` that the circuit breaker holds (and nobody dropped)."""
    return [i for (i,) in store.execute("""select id from decisions where rule = ? and held is not null
                                            and revoked_at is null order by id""", [rule])]


def _held(store, ids: list[int]) -> list[tuple]:
    if not ids:
        raise ValueError("no decisions given")
    rows = store.execute("""select id, scope, value, rule, held from decisions
                            where id in (select unnest($ids::bigint[])) and held is not null and revoked_at is null""",
                         {"ids": list(ids)})
    missing = sorted(set(ids) - {r[0] for r in rows})
    if missing:
        raise LookupError("no held decision " + ", ".join(f"#{i}" for i in missing[:20]) +
                          (f" and {len(missing) - 20} more" if len(missing) > 20 else ""))
    return rows


def _audit_held(store, actor: str, action: str, rows: list[tuple], reason: str, now: datetime) -> None:
    rules = sorted({r[3] for r in rows})
    audit(store, actor, action, "rule " + ", ".join(rules),
          {"ids": sorted(r[0] for r in rows), "held": sorted({r[4] for r in rows})}, reason, now)


def approve(store, actor: str, ids: list[int], reason: str, now: datetime) -> int:
    """Put held decisions in force: the operator has looked and the rule was right. Each gets a
    new change number, so the next policy version and every poller's delta carry it."""
    rows = _held(store, ids)
    allow = Allowlist(store, now)
    covered = [f"#{i} ({why})" for i, scope, value, _, _ in rows if (why := allow.covers(scope, value))]
    if covered:
        raise ValueError(f"allowlisted, never banned: {', '.join(covered[:20])}; drop these instead")
    store.execute("""update decisions set held = null, seq = nextval('decision_seq')
                     where id in (select unnest($ids::bigint[]))""", {"ids": [r[0] for r in rows]})
    _audit_held(store, actor, "approve held", rows, reason, now)
    return len(rows)


def drop(store, actor: str, ids: list[int], reason: str, now: datetime) -> int:
    """Revoke held decisions: the rule misfired (fix it before it fires again)."""
    rows = _held(store, ids)
    store.execute("""update decisions set revoked_at = $now, seq = nextval('decision_seq')
                     where id in (select unnest($ids::bigint[]))""", {"now": now, "ids": [r[0] for r in rows]})
    _audit_held(store, actor, "drop held", rows, reason, now)
    return len(rows)


def set_tier(store, actor: str, name: str, limits: dict, reason: str, now: datetime) -> None:
    if limits.get("burst") and not limits.get("requests_per_minute"):
        raise ValueError("a burst needs a rate: give requests_per_minute too")
    store.execute("""
        insert or replace into tiers (name, requests_per_minute, burst, concurrent, blob_bytes_per_second,
                                      window_bytes, window_seconds)
        values (?, ?, ?, ?, ?, ?, ?)""", [name, *(limits.get(f) for f in TIER_FIELDS)])
    audit(store, actor, "set tier", name, limits, reason, now)


def set_default_tiers(store, actor: str, anonymous: str, authenticated: str, reason: str, now: datetime) -> None:
    for t in (anonymous, authenticated):
        if not _tier_exists(store, t):
            raise ValueError(f"unknown tier {t!r}")
    store.execute("insert or replace into kv values ('anonymous_tier', ?), ('authenticated_tier', ?)",
                  [anonymous, authenticated])
    audit(store, actor, "set default tiers", None, {"anonymous": anonymous, "authenticated": authenticated}, reason, now)


def change_images(store, actor: str, name: str, patterns: list[str], add: bool, reason: str, now: datetime) -> None:
    if name not in LISTS:
        raise ValueError(f"image list must be one of {', '.join(LISTS)}")
    if any(not p or len(p) > 300 or any(c.isspace() for c in p) for p in patterns):
        raise ValueError("a pattern is a registry path without spaces, like docker.io/library/* or ghcr.io/**")
    for p in patterns:
        if add:
            store.execute("insert or replace into image_lists values (?, ?, ?, ?)", [name, p, reason, now])
        else:
            store.execute("delete from image_lists where list = ? and pattern = ?", [name, p])
    audit(store, actor, f"{'add to' if add else 'remove from'} {name} images", None, {"patterns": patterns}, reason, now)


def allow(store, actor: str, kind: str, value: str, reason: str, now: datetime, until: datetime | None = None) -> int:
    """Add an allowlist entry; returns how many decisions in force it revoked."""
    if kind not in ("ip", "cidr", "asn", "user"):
        raise ValueError("kind must be ip, cidr, asn or user")
    value = canonical(kind, value)
    store.execute("insert or replace into allowlist values (?, ?, ?, ?, ?)", [kind, value, reason, now, until])
    revoked = revoke_allowlisted(store, kind, value, now)
    audit(store, actor, "allow", f"{kind} {value}", {"revoked": revoked, "until": until}, reason, now)
    return revoked


def set_budget(store, actor: str, monthly_tib: float, reason: str, now: datetime) -> None:
    if not monthly_tib > 0:
        raise ValueError("the budget must be positive")
    store.execute("insert or replace into kv values ('monthly_budget_tib', ?)", [str(monthly_tib)])
    audit(store, actor, "set budget", None, {"monthly_tib": monthly_tib}, reason, now)

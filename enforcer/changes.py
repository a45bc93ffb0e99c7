"""Admin changes, written once for the API and the command line: each validates, changes the
store, and lands in the audit log (who, when, what, why). A ValueError says what is wrong.
The caller holds the store and publishes afterwards."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from core import values
from core.allowlist import Allowlist, revoke_allowlisted
from core.types import parse_duration
from enforcer import imagelist

SCOPES = ("ip", "range", "asn", "user")
LISTS = ("allowed", "unlimited", "blocked")
TIER_FIELDS = ("requests_per_minute", "burst", "concurrent", "blob_bytes_per_second", "window_bytes", "window_seconds")


MAX_DURATION = timedelta(days=3650)     # ten years: a longer ban is a typo, and overflows datetime
canonical = values.canonical


def seconds(text: str) -> int:
    try:
        span = parse_duration(text)
    except OverflowError:
        span = MAX_DURATION * 2
    if span > MAX_DURATION:
        raise ValueError(f"bad duration {text!r}: at most 3650d (ten years)")
    n = int(span.total_seconds())
    if n <= 0:
        raise ValueError(f"bad duration {text!r}: it must be positive")
    return n


def guard(settings) -> dict:
    """What admin changes check values against, from the settings: the widest ranges, and our
    own addresses (the listen address, the load balancers in trusted_proxies)."""
    widest = {4: settings.widest_ipv4, 6: settings.widest_ipv6}
    for v, most in ((4, 32), (6, 128)):
        if not 1 <= widest[v] <= most:
            raise ValueError(f"setting widest_ipv{v} ({settings.origin.get(f'widest_ipv{v}')}) must be 1 to {most}")
    return {"widest": widest, "protected": [settings.host, *settings.trusted_proxies]}


STOCK_GUARD = {"widest": dict(values.WIDEST), "protected": []}


def audit(store, actor: str, action: str, target: str | None, details: dict, reason: str | None,
          now: datetime) -> None:
    store.execute("insert into audit values (?, ?, ?, ?, ?, ?)",
                  [now, actor, action, target, json.dumps(details, default=str), reason])


def _tier_exists(store, tier: str | None) -> bool:
    return bool(tier) and bool(store.value("select count(*) from tiers where name = ?", [tier]))


def add_decision(store, actor: str, scope: str, value: str, effect: str, duration: str, reason: str,
                 now: datetime, tier: str | None = None, guard: dict = STOCK_GUARD, force: bool = False) -> int:
    """A manual ban, or a tier assignment (throttle, or boost for a generous tier). A ban the
    allowlist covers is refused. A ban or an assignment on the whole address space is refused;
    one on a range too wide, on loopback, link-local, unspecified or multicast space, on this
    server or a trusted proxy needs ``force``, and the audit row says it was forced: a throttle
    on everyone (0.0.0.0/1 and 128.0.0.0/1) or on the load balancer every client arrives from
    slows every client as surely as a ban stops them."""
    value = canonical(scope, value)
    span = seconds(duration)
    if effect != "ban" and not _tier_exists(store, tier):
        raise ValueError(f"unknown tier {tier!r}")
    noun, _, done = values.VERB[effect]
    if scope == "range" and (whole := values.network(value)).prefixlen == 0:
        raise ValueError(f"{whole} is the whole IPv{whole.version} address space: never {done}")
    if effect == "ban":
        covered = Allowlist(store, now).covers(scope, value)
        if covered:
            raise ValueError(f"{scope} {value} is allowlisted ({covered}): remove the allowlist entry first")
    forced = values.why_not_ban(scope, value, guard["widest"], guard["protected"], effect)
    if forced and not force:
        raise ValueError(f"{forced}; refused (--force, or \"force\": true, with a reason, to {noun} it anyway)")
    new_id = store.value("""
        insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, evidence, created_at, until)
        values (nextval('decision_seq'), ?, ?, ?, ?, null, 'manual', ?, ?, ?, ?) returning id""",
        [scope, value, effect, tier if effect != "ban" else None, reason, json.dumps({"by": actor}), now,
         now + timedelta(seconds=span)])
    details = {"duration": duration, "tier": tier, "id": new_id}
    if forced:
        details["forced"] = forced
    audit(store, actor, f"add {effect}", f"{scope} {value}", details, reason, now)
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
    """Define a tier or change some of its limits: the limits given are set (None: unlimited),
    the others keep their value (a new tier's: unlimited)."""
    values.tier_name(name)
    unknown = sorted(set(limits) - set(TIER_FIELDS))
    if unknown:
        raise ValueError(f"unknown tier limit {', '.join(unknown)}: the limits are {', '.join(TIER_FIELDS)}")
    if not limits:
        raise ValueError(f"give at least one limit ({', '.join(TIER_FIELDS)}; none for unlimited)")
    limits = {f: values.tier_limit(f, v) for f, v in limits.items()}
    clash = values.tier_clash(name, [n for (n,) in store.execute("select name from tiers")])
    if clash:
        raise Conflict(clash)
    row = store.execute(f"select {', '.join(TIER_FIELDS)} from tiers where name = ?", [name])
    merged = {**dict(zip(TIER_FIELDS, row[0] if row else [None] * len(TIER_FIELDS))), **limits}
    if merged["burst"] and not merged["requests_per_minute"]:
        raise ValueError("a burst needs a rate: give requests_per_minute too")
    store.execute("""
        insert or replace into tiers (name, requests_per_minute, burst, concurrent, blob_bytes_per_second,
                                      window_bytes, window_seconds)
        values (?, ?, ?, ?, ?, ?, ?)""", [name, *(merged[f] for f in TIER_FIELDS)])
    audit(store, actor, "set tier", name, {"set": limits, "now": merged}, reason, now)


def tier_uses(store, name: str, now: datetime, settings=None) -> list[str]:
    """What still names the tier: decisions not ended (held and simulated ones too), the
    default tiers, and with ``settings`` the setting budget_tighten_tier and the rules that
    throttle to it. The unlimited tier is the one an unlimited image puts a request in."""
    uses = ["the unlimited image list (/v1/check and the include put its images in this tier)"] \
        if name == "unlimited" else []
    rows = store.execute("""select id, scope, value, effect from decisions
                            where tier = ? and effect <> 'ban' and revoked_at is null and until > ?
                            order by id""", [name, now])
    if rows:
        shown = ", ".join(f"#{i} ({effect} {scope} {value})" for i, scope, value, effect in rows[:10])
        uses.append(f"{len(rows)} decision(s) in force or held: {shown}" + (" …" if len(rows) > 10 else "")
                    + " (end them with `pullwarden unban ID`)")
    for key, value in store.execute("""select key, value from kv where key in ('anonymous_tier', 'authenticated_tier')
                                       order by key"""):
        if value == name:
            uses.append(f"the {key.removesuffix('_tier')} default tier (PUT /v1/admin/default-tiers)")
    if settings is not None:
        if settings.budget_tighten_tier == name:
            uses.append("the setting budget_tighten_tier")
        from rules.engine import RuleError, load_rules
        try:
            rules = load_rules(store, None, settings.rules_dir or None)
        except RuleError:
            rules = []          # rules that do not load use nothing yet; detection says why
        uses += [f"rule {r.name} ({r.action}, {r.source})" for r in rules if r.tier == name]
    return uses


def delete_tier(store, actor: str, name: str, reason: str, now: datetime, settings=None) -> None:
    """Remove a tier nothing uses; one still in use is a Conflict that names each use."""
    row = store.execute(f"select {', '.join(TIER_FIELDS)} from tiers where name = ?", [name])
    if not row:
        raise LookupError(f"no tier {name!r}")
    uses = tier_uses(store, name, now, settings)
    if uses:
        raise Conflict(f"tier {name} is in use: {'; '.join(uses)}")
    store.execute("delete from tiers where name = ?", [name])
    # its limits, to set it again as it was
    audit(store, actor, "delete tier", name, {"had": dict(zip(TIER_FIELDS, row[0]))}, reason, now)


def set_default_tiers(store, actor: str, anonymous: str, authenticated: str, reason: str, now: datetime) -> None:
    for t in (anonymous, authenticated):
        if not _tier_exists(store, t):
            raise ValueError(f"unknown tier {t!r}")
    store.execute("insert or replace into kv values ('anonymous_tier', ?), ('authenticated_tier', ?)",
                  [anonymous, authenticated])
    audit(store, actor, "set default tiers", None, {"anonymous": anonymous, "authenticated": authenticated}, reason, now)


def _stored(pattern: str) -> str:
    try:
        return imagelist.canonical_pattern(pattern)
    except ValueError:
        return pattern.strip()


class Conflict(ValueError):
    """The change collides with what is there (an entry that exists already): 409 over HTTP."""


def change_images(store, actor: str, name: str, patterns: list[str], add: bool, reason: str,
                  now: datetime) -> tuple[int, int]:
    """Add patterns to an image list, or remove them; returns (changed, already so). Adding
    keeps an existing pattern and its reason; removing a pattern the list does not hold is
    refused, naming it, and nothing is removed."""
    if name not in LISTS:
        raise ValueError(f"image list must be one of {', '.join(LISTS)}")
    # stored as CRProxy reads them (docker.io/busybox is docker.io/library/busybox); one it
    # could never match is refused, saying why
    if add:
        patterns = list(dict.fromkeys(imagelist.canonical_pattern(p) for p in patterns))
    held = {p for (p,) in store.execute("""select pattern from image_lists where list = ?""", [name])}
    if not add:         # as typed, or as it was stored: docker.io/busybox removes docker.io/library/busybox
        patterns = list(dict.fromkeys(p.strip() if p.strip() in held else _stored(p) for p in patterns))
    missing = [] if add else [p for p in patterns if p not in held]
    if missing:
        raise LookupError(f"not on the {name} list: {', '.join(missing[:20])}"
                          + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""))
    todo = [p for p in patterns if p not in held] if add else patterns
    for p in todo:
        if add:
            store.execute("insert into image_lists values (?, ?, ?, ?)", [name, p, reason, now])
        else:
            store.execute("delete from image_lists where list = ? and pattern = ?", [name, p])
    if todo:
        audit(store, actor, f"{'add to' if add else 'remove from'} {name} images", None, {"patterns": todo},
              reason, now)
    return len(todo), len(patterns) - len(todo)


def allow(store, actor: str, kind: str, value: str, reason: str, now: datetime, until: datetime | None = None,
          guard: dict = STOCK_GUARD) -> int:
    """Add an allowlist entry; returns how many decisions in force it revoked. An entry that
    exists already is a Conflict (its reason is not replaced silently); a range wider than
    the limit is refused, as for bans: an allowlist entry that wide would free half the
    internet at once."""
    if kind not in ("ip", "cidr", "asn", "user"):
        raise ValueError("kind must be ip, cidr, asn or user")
    value = canonical(kind, value)
    if kind == "cidr" and (wide := values.too_wide(values.network(value), guard["widest"])):
        raise ValueError(f"{wide}; refused: allowlist narrower ranges")
    there = store.execute("""select reason, created_at from allowlist where kind = ? and value = ?
                             and (until is null or until > ?)""", [kind, value, now])
    if there:
        raise Conflict(f"{kind} {value} is allowlisted already (since {there[0][1]:%Y-%m-%d %H:%M}: "
                       f"{there[0][0]}); remove it first to change its reason")
    store.execute("insert or replace into allowlist values (?, ?, ?, ?, ?)", [kind, value, reason, now, until])
    revoked = revoke_allowlisted(store, kind, value, now)
    audit(store, actor, "allow", f"{kind} {value}", {"revoked": revoked, "until": until}, reason, now)
    return revoked


def disallow(store, actor: str, kind: str, value: str, reason: str, now: datetime) -> None:
    """Remove an allowlist entry (given as typed or as stored); the decisions it kept out do
    not come back, the next detection pass judges that entity like any other."""
    value = canonical(kind, value)
    if not store.value("select count(*) from allowlist where kind = ? and value = ?", [kind, value]):
        raise LookupError(f"no allowlist entry {kind} {value}")
    store.execute("delete from allowlist where kind = ? and value = ?", [kind, value])
    audit(store, actor, "remove allow", f"{kind} {value}", {}, reason, now)


def set_budget(store, actor: str, monthly_tib: float, reason: str, now: datetime) -> None:
    if not monthly_tib > 0:
        raise ValueError("the budget must be positive")
    store.execute("insert or replace into kv values ('monthly_budget_tib', ?)", [str(monthly_tib)])
    audit(store, actor, "set budget", None, {"monthly_tib": monthly_tib}, reason, now)

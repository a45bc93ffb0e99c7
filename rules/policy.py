"""Findings → decisions. Detection says what it found and why; this layer decides what to do:
allowlists win, one decision per entity, effect and rule (extended while it goes on), longer
for repeat offenders, and a circuit breaker that holds a pass that would ban too much."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.allowlist import Allowlist, net as _net
from core.types import Decision
from rules.engine import Rule
from rules.features import SCOPE_OF, window_bounds

ESCALATION_LOOKBACK = timedelta(days=30)


@dataclass
class Finding:
    rule: Rule
    entity: str
    features: dict
    reason: str


@dataclass
class PassResult:
    now: datetime
    findings: list[Finding] = field(default_factory=list)
    new: list[Decision] = field(default_factory=list)
    extended: list[Decision] = field(default_factory=list)
    allowlisted: list[tuple[Finding, str]] = field(default_factory=list)
    held: str | None = None


def plan(store, findings: list[Finding], now: datetime, breaker_share: float, breaker_floor: int) -> PassResult:
    """What this pass would change, without writing anything."""
    result = PassResult(now, findings)
    allow = Allowlist(store, now)
    for f in findings:
        if f.rule.effect == "tag":
            continue
        scope = SCOPE_OF[f.rule.entity]
        if scope in ("ip", "range") and _net(f.entity) is None:
            continue            # not an address (a log's junk): never a decision proxies choke on
        why = allow.covers(scope, f.entity)
        if why:
            result.allowlisted.append((f, why))
            continue
        active = store.execute("""
            select id, until from decisions where scope = ? and value = ? and effect = ? and rule = ?
              and simulated = ? and revoked_at is null and until > ? order by until desc limit 1""",
            [scope, f.entity, f.rule.effect, f.rule.name, f.rule.simulate, now])
        # a repeat offence is a new decision after earlier ones ended; extending the one in
        # force does not escalate
        earlier = store.value("""
            select count(*) from decisions where scope = ? and value = ? and rule = ? and not simulated
              and created_at < ? and created_at >= ? and id <> ?""",
            [scope, f.entity, f.rule.name, now, now - ESCALATION_LOOKBACK, active[0][0] if active else -1])
        duration = f.rule.duration * (f.rule.escalation_factor ** earlier)
        if f.rule.escalation_cap:
            duration = min(duration, f.rule.escalation_cap)
        until = now + duration
        d = Decision(scope=scope, value=f.entity, effect=f.rule.effect, tier=f.rule.tier, rule=f.rule.name,
                     reason=f.reason, evidence=f.features, created_at=now, until=until,
                     simulated=f.rule.simulate)
        if active:
            if until > active[0][1]:
                d.id = active[0][0]
                result.extended.append(d)
            continue
        result.new.append(d)
    result.held = _breaker(store, result, now, breaker_share, breaker_floor)
    return result


def _breaker(store, result: PassResult, now: datetime, share: float, floor: int) -> str | None:
    bans = [d for d in result.new + result.extended if d.effect == "ban" and not d.simulated]
    for d in bans:
        net = _net(d.value) if d.scope == "range" else None
        if net and net.prefixlen < (16 if net.version == 4 else 32):
            return f"range {d.value} is wider than /16 (IPv4) or /32 (IPv6)"
    if not bans:
        return None
    start, end = window_bounds(now, "24h")
    active = store.value("select count(distinct client_ip) from facts_hourly where hour >= ? and hour < ?",
                         [start, end]) or 0
    covered: set[str] = set()
    for d in bans:
        if d.scope == "ip":
            covered.add(d.value)
            continue
        cond = {"range": "client_ip in (select ip from ip_prefix where prefix = $v)",
                "asn": "client_ip in (select ip from ip_info where cast(asn as varchar) = $v)",
                "user": "remote_user = $v"}[d.scope]
        covered.update(r[0] for r in store.execute(
            f"select distinct client_ip from facts_hourly where hour >= $s and hour < $e and {cond}",
            {"s": start, "e": end, "v": d.value}))
    limit = max(floor, share * active)
    if len(covered) > limit:
        return (f"this pass would ban {len(covered)} of the {active} addresses active in the last 24h "
                f"(limit {share:.0%}, at least {floor}): held, nothing applied")
    return None


def apply(store, result: PassResult) -> None:
    """Write the pass: findings always; decisions unless the breaker held the pass."""
    for f in result.findings:
        store.execute("insert into findings values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      [result.now, f.rule.name, f.rule.entity, f.entity, f.rule.window, f.rule.action,
                       f.rule.simulate, f.reason, json.dumps(f.features, default=str)])
    if result.held:
        return
    for d in result.new:
        d.seq = store.value("select nextval('decision_seq')")
        d.id = store.value("""
            insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, evidence, created_at,
                                   until, simulated)
            values (?, ?, ?, ?, ?, ?, 'rule', ?, ?, ?, ?, ?) returning id""",
            [d.seq, d.scope, d.value, d.effect, d.tier, d.rule, d.reason, json.dumps(d.evidence, default=str),
             d.created_at, d.until, d.simulated])
    for d in result.extended:
        d.seq = store.value("select nextval('decision_seq')")
        store.execute("update decisions set until = ?, seq = ?, reason = ?, evidence = ? where id = ?",
                      [d.until, d.seq, d.reason, json.dumps(d.evidence, default=str), d.id])

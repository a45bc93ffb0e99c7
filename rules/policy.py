"""Findings → decisions. Detection says what it found and why; this layer decides what to do:
allowlists win, one decision per entity, effect and rule (extended while it goes on), longer
for repeat offenders, and a circuit breaker that holds the new bans of a rule that would ban
too much (a bad rule or a bad threshold) while the other rules' decisions are applied."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.allowlist import Allowlist, net as _net
from core.types import Decision, parse_duration
from core.values import canonical, why_held
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
class Hold:
    """New bans of one rule that the circuit breaker keeps out of force in one pass, and why."""
    rule: str
    reason: str
    decisions: list[Decision]


@dataclass
class PassResult:
    """``new`` and ``extended`` include held decisions (their ``held`` says why); ``held`` groups
    the bans this pass held, per rule and reason."""
    now: datetime
    findings: list[Finding] = field(default_factory=list)
    new: list[Decision] = field(default_factory=list)
    extended: list[Decision] = field(default_factory=list)
    allowlisted: list[tuple[Finding, str]] = field(default_factory=list)
    held: list[Hold] = field(default_factory=list)
    unbanned: list[tuple[Finding, str]] = field(default_factory=list)    # suppressed after an admin's unban

    @property
    def applied(self) -> list[Decision]:
        return [d for d in self.new + self.extended if not d.held]

    @property
    def held_reasons(self) -> str | None:
        """The reasons of this pass's holds in one line (detect_runs.held), or None."""
        return "; ".join(f"{h.rule}: {h.reason}" for h in self.held) or None


def plan(store, findings: list[Finding], now: datetime, breaker_share: float, breaker_floor: int,
         protected=(), since: datetime | None = None) -> PassResult:
    """What this pass would change, without writing anything. ``protected``: our own addresses
    and ranges besides the host's (settings host, trusted_proxies). ``since``: the time of the
    previous full pass, when fresh passes may have banned since (serve): their bans count in
    this pass's circuit breaker (see _breaker)."""
    result = PassResult(now, findings)
    allow = Allowlist(store, now)
    wanted: list[tuple[Finding, str]] = []
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
        wanted.append((f, scope))
    ended = unbanned_at(store, [(scope, f.entity, f.rule.name) for f, scope in wanted])
    kept = []
    for (f, scope), at in zip(wanted, ended):
        if at is not None and now - parse_duration(f.rule.window) < at:
            result.unbanned.append((f, unban_note(f.rule, at)))
        else:
            kept.append((f, scope))
    wanted = kept
    still_held: list[Decision] = []     # found again while held: not in force, so judged again
    for (f, scope), (current, until_now, held, earlier) in zip(wanted, _history(store, wanted, now)):
        duration = f.rule.duration * (f.rule.escalation_factor ** earlier)
        if f.rule.escalation_cap:
            duration = min(duration, f.rule.escalation_cap)
        until = now + duration
        d = Decision(scope=scope, value=f.entity, effect=f.rule.effect, tier=f.rule.tier, rule=f.rule.name,
                     reason=f.reason, evidence=f.features, created_at=now, until=until,
                     simulated=f.rule.simulate)
        if current is not None:
            d.id, d.held = current, held
            if held:
                still_held.append(d)
            if until > until_now:
                result.extended.append(d)
            continue
        result.new.append(d)
    result.held = _ours(result, protected) + _breaker(store, result, still_held, breaker_share, breaker_floor,
                                                      made_since(store, since, now) if since else [])
    return result


# A decision an admin ended by hand (its "revoke …" row in the audit log) is not made again by
# the same rule from the same evidence: while the rule's window still reaches back before the
# unban, its findings for that entity are suppressed; after that all the evidence is new.
UNBANNED = """
    with k as (select unnest($scope::varchar[]) as scope, unnest($value::varchar[]) as value,
                      unnest($rule::varchar[]) as rule, unnest($i::integer[]) as i)
    select k.i, max(d.revoked_at) from k
    join decisions d on d.scope = k.scope and d.value = k.value and d.rule = k.rule and d.revoked_at is not null
    join audit a on a.action like 'revoke %' and a.target = d.scope || ' ' || d.value
                    and try_cast(json_extract(a.details, '$.id') as bigint) = d.id
    group by k.i
"""


def unbanned_at(store, keys: list[tuple[str, str, str]]) -> list[datetime | None]:
    """For each (scope, value, rule): when an admin last ended such a decision by hand, or None."""
    if not keys:
        return []
    found = dict(store.execute(UNBANNED, {"scope": [k[0] for k in keys], "value": [k[1] for k in keys],
                                          "rule": [k[2] for k in keys], "i": list(range(len(keys)))}))
    return [found.get(i) for i in range(len(keys))]


def unban_note(rule: Rule, at: datetime) -> str:
    return (f"unbanned by an admin at {at:%Y-%m-%d %H:%M}: {rule.name} is not applied again before "
            f"{at + parse_duration(rule.window):%Y-%m-%d %H:%M}, when its {rule.window} window holds only newer evidence")


# Per wanted decision: the decision in force for the same entity, effect and rule, or else a
# held one (either is extended, never repeated), and how many earlier decisions of that rule
# the entity had in the lookback: a repeat offence is a new decision after earlier ones ended;
# extending the one in force does not escalate, and a held one was never enforced. One query
# for the whole pass: a misfiring rule's thousand findings cost one round trip, not two thousand.
HISTORY = """
    with k as (select unnest($scope::varchar[]) as scope, unnest($value::varchar[]) as value,
                      unnest($effect::varchar[]) as effect, unnest($rule::varchar[]) as rule,
                      unnest($simulated::boolean[]) as simulated, unnest($i::integer[]) as i),
    cur as (select k.i, d.id, d.until, d.held from k join decisions d using (scope, value, effect, rule, simulated)
            where d.revoked_at is null and d.until > $now
            qualify row_number() over (partition by k.i order by d.held is null desc, d.until desc, d.id desc) = 1),
    prior as (select k.i, count(*) as n from k
              join decisions e on e.scope = k.scope and e.value = k.value and e.rule = k.rule
              left join cur on cur.i = k.i
              where not e.simulated and e.held is null and e.created_at < $now and e.created_at >= $since
                and e.id is distinct from cur.id
              group by k.i)
    select k.i, cur.id, cur.until, cur.held, coalesce(prior.n, 0)
    from k left join cur using (i) left join prior using (i) order by k.i
"""


def _history(store, wanted: list[tuple[Finding, str]], now: datetime) -> list[tuple]:
    if not wanted:
        return []
    cols = {"scope": [s for _, s in wanted], "value": [f.entity for f, _ in wanted],
            "effect": [f.rule.effect for f, _ in wanted], "rule": [f.rule.name for f, _ in wanted],
            "simulated": [f.rule.simulate for f, _ in wanted], "i": list(range(len(wanted)))}
    rows = store.execute(HISTORY, {**cols, "now": now, "since": now - ESCALATION_LOOKBACK})
    return [r[1:] for r in rows]


def _ours(result: PassResult, protected) -> list[Hold]:
    """A rule's new ban or throttle on this server or a trusted proxy is held: when the proxy's
    log gives every client the load balancer's address (a missing real_ip or --behind), that
    address is the heaviest client there is, and banning it would ban everyone. So is one on an
    address no client comes from (loopback, link-local, unspecified, multicast): a log or a
    header that names one is wrong, and a decision there stops nobody. The same guard as a
    manual ban's (core.values.why_held), with the reason."""
    holds = []
    for d in result.new:
        net = _net(d.value) if d.scope in ("ip", "range") and not d.simulated else None
        why = why_held(net, protected, effect=d.effect) if net is not None else None
        try:        # a name from a log that the admin API would refuse (a user with a space, 200
            canonical(d.scope, d.value)     # characters long): every agent would refuse the policy
        except ValueError as e:
            why = None if d.simulated else f"{e}: the admin API refuses it, and so does the agent that renders it"
        if why:
            d.held = why
            holds.append(Hold(d.rule, why, [d]))
    return holds


# The widest range a rule may ban, by IP version: a wider one is held whatever the numbers.
WIDEST = {4: 16, 6: 32}


# The bans in force that rules made after ``since`` and before ``now``: between two full
# passes, serve's fresh passes (rules/detect.py leave_to_full_pass).
MADE_SINCE = """
    select id, scope, value, rule from decisions
    where origin = 'rule' and effect = 'ban' and not simulated and held is null and revoked_at is null
      and created_at > $since and created_at < $now and until > $now
"""


def made_since(store, since: datetime, now: datetime) -> list[Decision]:
    return [Decision(scope=scope, value=value, effect="ban", tier=None, rule=rule, reason="", evidence={},
                     created_at=since, until=now, id=i)
            for i, scope, value, rule in store.execute(MADE_SINCE, {"since": since, "now": now})]


def _breaker(store, result: PassResult, still_held: list[Decision], share: float, floor: int,
             made: list[Decision] = ()) -> list[Hold]:
    """Judge each rule's new bans on their own: those of a rule that would ban more than
    ``share`` of the addresses active in the last 24 h (and more than ``floor``) are held, the
    other rules' apply. A rule's bans that are still held from an earlier pass count with its
    new ones, so a misfiring rule cannot trickle through a few at a time; so do ``made``, the
    bans the fresh passes since the previous full pass put in force: together with this pass
    they are one interval, and a rule gets one allowance in it, not one per kind of pass.
    Extensions of decisions in force, throttles and simulated decisions are not judged. Sets
    ``held`` on what it holds and returns the holds."""
    holds: list[Hold] = []
    judged: dict[str, list[Decision]] = defaultdict(list)
    for d in result.new:
        if d.effect != "ban" or d.simulated or d.held:
            continue
        net = _net(d.value) if d.scope == "range" else None
        if net and net.prefixlen < WIDEST[net.version]:
            d.held = f"range {d.value} is wider than /{WIDEST[net.version]}: a rule never bans that much at once"
            holds.append(Hold(d.rule, d.held, [d]))
            continue
        judged[d.rule].append(d)
    if not judged:
        return holds
    day, end = window_bounds(result.now, "24h")
    active = store.value("select count(distinct client_ip) from facts_hourly where hour >= ? and hour < ?",
                         [day, end]) or 0
    allowed = max(floor, math.floor(share * active))
    windows = {f.rule.name: f.rule.window for f in result.findings}
    before: dict[str, list[Decision]] = defaultdict(list)
    for d in still_held:
        if d.effect == "ban" and not d.simulated:
            before[d.rule].append(d)
    fresh: dict[str, list[Decision]] = defaultdict(list)
    for d in made:
        fresh[d.rule].append(d)
    for rule, bans in sorted(judged.items()):
        hit = sum(hits(store, bans + before[rule] + fresh[rule], windows.get(rule, "24h"), result.now).values())
        if hit > allowed:
            counted = ([f"the {len(before[rule])} it had held before"] if before[rule] else []) + \
                ([f"the {len(fresh[rule])} its fresh passes banned since the last full pass"] if fresh[rule] else [])
            earlier = f", with {' and '.join(counted)}," if counted else ""
            reason = (f"the rule{earlier} would hit {hit} of the {active} addresses active in the last 24h; "
                      f"one rule may ban {allowed} in a pass: {share:.0%} of them, at least {floor}")
            for d in bans:
                d.held = reason
            holds.append(Hold(rule, reason, bans))
    return holds


# How many of the addresses active in the last 24 h a ban hits, as the breaker counts them.
# An address ban hits its address. An ASN or user ban hits every address active under it.
# A range ban hits its collateral: the active addresses inside it that behave differently
# from the pattern it was found for. A rotation is many addresses taking turns pulling the
# same blobs, so an address takes part when it downloaded, in the rule's window, one of the
# blobs the range downloaded more than once; every other active address of the range is
# collateral (a neighbour pulling something else, a light user). The addresses taking part
# count once together, as one offender, like an address ban; every ban hits at least one.
# So a /64 of 60 rotating addresses hits 1, and the same /24 with an unrelated neighbour 2;
# a misfiring range rule over ranges of light users hits about one per user.
HITS = {
    "asn": """
        with r as (select distinct unnest($values::varchar[]) as value)
        select r.value, count(distinct f.client_ip) from r
        left join ip_info i on cast(i.asn as varchar) = r.value
        left join facts_hourly f on f.client_ip = i.ip and f.hour >= $day and f.hour < $end
        group by r.value""",
    "user": """
        with r as (select distinct unnest($values::varchar[]) as value)
        select r.value, count(distinct f.client_ip) from r
        left join facts_hourly f on f.remote_user = r.value and f.hour >= $day and f.hour < $end
        group by r.value""",
    "range": """
        with r as (select distinct unnest($values::varchar[]) as value),
        ips as (select px.ip, px.prefix as value from ip_prefix px join r on r.value = px.prefix),
        active as (select distinct ips.value, f.client_ip from facts_hourly f join ips on ips.ip = f.client_ip
                   where f.hour >= $day and f.hour < $end),
        got as (select ips.value, b.client_ip, b.blob, sum(b.downloads) as n from blob_hourly b
                join ips on ips.ip = b.client_ip where b.hour >= $start and b.hour < $end group by all),
        repeated as (select value, blob from got group by all having sum(n) >= 2),
        taking_part as (select distinct got.value, got.client_ip from got join repeated using (value, blob))
        select r.value, count(a.client_ip) filter (where t.client_ip is null)
                        + case when count(t.client_ip) > 0 then 1 else 0 end
        from r left join active a on a.value = r.value
        left join taking_part t on t.value = a.value and t.client_ip = a.client_ip
        group by r.value""",
}


def hits(store, bans: list[Decision], window: str, now: datetime) -> dict[tuple[str, str], int]:
    """(scope, value) -> the active addresses each ban hits (see HITS), at least 1."""
    day, end = window_bounds(now, "24h")
    start, _ = window_bounds(now, window)
    out = {("ip", d.value): 1 for d in bans if d.scope == "ip"}
    for scope, sql in HITS.items():
        values = [d.value for d in bans if d.scope == scope]
        if values:
            p = {"values": values, "day": day, "end": end, "start": start}
            rows = store.execute(sql, {k: v for k, v in p.items() if f"${k}" in sql})
            out.update({(scope, v): max(1, n) for v, n in rows})
    return out


def _record_findings(store, now: datetime, fs: list[Finding]) -> None:
    """One row per episode: a finding that an earlier pass made within the rule's window of
    now continues that row (newest numbers, last_seen, passes + 1); the others are new rows."""
    p = {"now": now, "rule": [f.rule.name for f in fs], "kind": [f.rule.entity for f in fs],
         "entity": [f.entity for f in fs], "window": [f.rule.window for f in fs],
         "span": [int(parse_duration(f.rule.window).total_seconds()) for f in fs],
         "action": [f.rule.action for f in fs], "simulated": [f.rule.simulate for f in fs],
         "reason": [f.reason for f in fs], "evidence": [json.dumps(f.features, default=str) for f in fs]}
    store.execute("""
        create or replace temp table pass_findings as
        select unnest($rule::varchar[]) as rule, unnest($kind::varchar[]) as kind, unnest($entity::varchar[]) as entity,
               unnest($window::varchar[]) as window_name, unnest($span::integer[]) as span,
               unnest($action::varchar[]) as action, unnest($simulated::boolean[]) as simulated,
               unnest($reason::varchar[]) as reason, unnest($evidence::varchar[]) as evidence""",
                  {k: v for k, v in p.items() if k != "now"})
    continued = store.execute("""
        update findings set last_seen = $now, passes = findings.passes + 1, reason = k.reason,
                            evidence = k.evidence::json, action = k.action, simulated = k.simulated
        from pass_findings k
        where findings.rule = k.rule and findings.entity_kind = k.kind and findings.entity = k.entity
          and findings.last_seen >= $now - to_seconds(k.span)
        returning findings.rule, findings.entity_kind, findings.entity""", {"now": now})
    store.execute("create or replace temp table continued_findings (rule varchar, kind varchar, entity varchar)")
    if continued:
        store.execute("""insert into continued_findings select unnest($r::varchar[]), unnest($k::varchar[]),
                                                               unnest($e::varchar[])""",
                      {"r": [c[0] for c in continued], "k": [c[1] for c in continued], "e": [c[2] for c in continued]})
    store.execute("""
        insert into findings (now, rule, entity_kind, entity, window_name, action, simulated, reason, evidence,
                              last_seen, passes)
        select $now, rule, kind, entity, window_name, action, simulated, reason, evidence::json, $now, 1
        from pass_findings k
        where not exists (select 1 from continued_findings c
                          where c.rule = k.rule and c.kind = k.kind and c.entity = k.entity)""", {"now": now})
    store.execute("drop table pass_findings")
    store.execute("drop table continued_findings")


def apply(store, result: PassResult) -> None:
    """Write the pass: findings, decisions (held ones with their reason), and an audit row per
    hold, so that the operator sees who held what and why."""
    if result.findings:
        _record_findings(store, result.now, result.findings)
    if result.new:
        new = result.new
        ids = sorted(r[0] for r in store.execute("select nextval('decision_ids') from range(?)", [len(new)]))
        seqs = sorted(r[0] for r in store.execute("select nextval('decision_seq') from range(?)", [len(new)]))
        for d, i, q in zip(new, ids, seqs):
            d.id, d.seq = i, q
        store.execute("""
            insert into decisions (id, seq, scope, value, effect, tier, rule, origin, reason, evidence, created_at,
                                   until, simulated, held)
            select unnest($id::bigint[]), unnest($seq::bigint[]), unnest($scope::varchar[]),
                unnest($value::varchar[]), unnest($effect::varchar[]), unnest($tier::varchar[]),
                unnest($rule::varchar[]), 'rule', unnest($reason::varchar[]), unnest($evidence::varchar[])::json,
                $now, unnest($until::timestamp[]), unnest($simulated::boolean[]), unnest($held::varchar[])""",
            {"id": ids, "seq": seqs, "scope": [d.scope for d in new], "value": [d.value for d in new],
             "effect": [d.effect for d in new], "tier": [d.tier for d in new], "rule": [d.rule for d in new],
             "reason": [d.reason for d in new], "evidence": [json.dumps(d.evidence, default=str) for d in new],
             "now": result.now, "until": [d.until for d in new], "simulated": [d.simulated for d in new],
             "held": [d.held for d in new]})
    if result.extended:
        ext = result.extended
        seq_of = dict(store.execute("""
            update decisions set until = k.until, seq = nextval('decision_seq'), reason = k.reason,
                                 evidence = k.evidence::json
            from (select unnest($id::bigint[]) as id, unnest($until::timestamp[]) as until,
                         unnest($reason::varchar[]) as reason, unnest($evidence::varchar[]) as evidence) k
            where decisions.id = k.id
            returning decisions.id, decisions.seq""",
            {"id": [d.id for d in ext], "until": [d.until for d in ext], "reason": [d.reason for d in ext],
             "evidence": [json.dumps(d.evidence, default=str) for d in ext]}))
        for d in ext:
            d.seq = seq_of[d.id]
    for h in result.held:
        store.execute("insert into audit values (?, 'breaker', 'hold', ?, ?, ?)",
                      [result.now, f"rule {h.rule}", json.dumps({"decisions": len(h.decisions),
                                                                 "ids": [d.id for d in h.decisions]}), h.reason])

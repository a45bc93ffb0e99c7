"""One detection pass: roll up, compute the features each rule needs, evaluate, decide.

A full pass judges every entity. A fresh pass (``detect(..., fresh=Fresh(...))``, what serve
runs right after an ingest, and the bench's hourly pass) judges only the entities whose
features may have moved since the last pass (rules/changed.py: new events, a window's end, an
ASN's neighbours, the mirror's share, the object store's late downloads), each over its whole
window, so what it finds for them is what a full pass would; it only adds decisions, and leaves
extensions and anything it cannot judge alone to the next full pass. A group whose rules all
have strict conditions on cheap features is judged in two steps (rules/prefilter.py)."""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

from rules import changed, features, policy, prefilter
from rules.changed import Fresh, judging_only
from rules.engine import Rule
from rules.objectjoin import LINK_EXPIRES
from rules.rollup import roll_up


# Always computed, so that every decision's evidence shows the size of what it judged.
CORE = {"requests", "bytes", "pulls", "blob_bytes", "addresses"}


def latest_event_time(store) -> datetime | None:
    return store.value("select max(ts) from events")


def find(store, rules: list[Rule], now: datetime, hosting, fresh: Fresh | None = None,
         link: int = LINK_EXPIRES) -> list[policy.Finding]:
    """Every rule's findings at ``now``; features are computed once per (entity, window).
    ``fresh``: judge only the entities whose features may have moved (rules/changed.py);
    ``link``: how long the mirror's signed links live (whom a download may count for)."""
    groups: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for r in rules:
        groups[(r.entity, r.window)].append(r)
    found = []
    cols = ["entity", *features.NAMES]
    if fresh is not None:
        changed.prepare(store, fresh, min((features.window_bounds(now, r.window)[0] for r in rules), default=now),
                        link)
    for (entity, window), group in sorted(groups.items()):
        start, end = features.window_bounds(now, window)
        needed = set().union(*(r.uses for r in group)) | CORE
        sql = features.features_sql(entity, needed=needed)
        bound = {"start": start, "end": end, "hosting": list(hosting)}
        if fresh is not None and not changed.judge(store, fresh, now, entity, window, group, needed, hosting):
            continue
        could = prefilter.condition(group) if needed & prefilter.EXPENSIVE else None
        if could is not None:
            # two steps (rules/prefilter.py): the cheap features, then all of them for the
            # entities a rule could still match
            first = features.features_sql(entity, needed=prefilter.cheap_needed(group, CORE))
            if fresh is not None:
                first = judging_only(first, entity)
            store.execute(f"create or replace temp table candidates as select entity from ({first}) where {could}",
                          features.params(first, **bound))
            store.execute("create or replace temp table judged as select entity from candidates")
            store.execute("drop table candidates")
        if fresh is not None or could is not None:
            sql = judging_only(sql, entity)
        store.execute(f"create or replace temp table feat as {sql}", features.params(sql, **bound))
        for rule in group:
            for row in store.execute(f"select * from feat where ({rule.where}) order by entity"):
                values = dict(zip(cols, row))
                entity_value = values.pop("entity")
                found.append(policy.Finding(rule, entity_value, values, rule.explain(values)))
    store.execute("drop table if exists feat")    # ~25 MB of DuckDB's memory otherwise held until the next pass
    store.execute("drop table if exists judged")
    store.execute("drop table if exists changed_entities")
    return found


def events_top(store) -> int:
    """The seq of the newest stored event (-1 when there is none)."""
    top = store.value("select max(seq) from events")
    return -1 if top is None else top


def last_full_pass(store, now: datetime) -> datetime | None:
    """The ``now`` of the last full pass written before ``now`` (serve passes it as ``since`` to
    the next full pass, also across a restart); None when there is none."""
    return store.value("select max(now) from detect_runs where kind = 'full' and now < ?", [now])


def objects_top(store) -> int:
    """The seq of the newest stored object-store row (-1 when there is none)."""
    top = store.value("select max(seq) from object_events")
    return -1 if top is None else top


def leave_to_full_pass(store, result: policy.PassResult, since: datetime, share: float, floor: int) -> set[str]:
    """Trim a fresh pass's result to what it may decide alone; returns the rules it deferred.
    It adds decisions but extends none: the full pass extends, else a long episode would make a
    new policy version every few seconds. The circuit breaker judges a rule's new bans against
    each other, which a pass that sees a few entities cannot do alone: the fresh passes between
    two full passes count as one pass. The new bans of a rule that has bans held for an admin,
    or that would take the rule's bans made since the last full pass past what the breaker lets
    one rule ban in a pass (``share`` of the addresses active in the last 24 h, at least
    ``floor``), wait for the next full pass, which judges them together."""
    result.extended = []
    bans = Counter(d.rule for d in result.new if d.effect == "ban" and not d.simulated)
    if not bans:
        return set()
    rows = store.execute("""
        select rule, count(*) filter (where held is null and created_at > $since),
               count(*) filter (where held is not null)
        from decisions
        where rule in (select unnest($rules::varchar[])) and effect = 'ban' and not simulated
          and revoked_at is null and until > $now
        group by rule""", {"rules": sorted(bans), "since": since, "now": result.now})
    before = {rule: (made, held) for rule, made, held in rows}
    allowed = floor
    if any(before.get(rule, (0, 0))[0] + n > floor for rule, n in bans.items()):
        day, end = features.window_bounds(result.now, "24h")
        active = store.value("select count(distinct client_ip) from facts_hourly where hour >= ? and hour < ?",
                             [day, end]) or 0
        allowed = max(floor, math.floor(share * active))
    deferred = {rule for rule, n in bans.items()
                if before.get(rule, (0, 0))[1] or before.get(rule, (0, 0))[0] + n > allowed}
    result.new = [d for d in result.new if d.rule not in deferred]
    result.held = [h for h in result.held if h.rule not in deferred]
    return deferred


def detect(store, settings, rules: list[Rule], now: datetime, write: bool = True,
           clock=time.time, fresh: Fresh | None = None, since: datetime | None = None) -> policy.PassResult:
    """Judge the windows that end at ``now``: the wall clock live, a pinned time in a replay.
    ``fresh``: judge only what changed (see Fresh and leave_to_full_pass). ``since``, for a full
    pass: the previous full pass's time, when fresh passes ran after it (serve); the bans they
    made count in this pass's circuit breaker."""
    started = clock()
    roll_up(store, settings=settings)
    found = find(store, rules, now, settings.hosting_asns, fresh=fresh, link=settings.link_expires)
    result = policy.plan(store, found, now, settings.breaker_share, settings.breaker_floor,
                         protected=[settings.host, *settings.trusted_proxies],
                         since=since if fresh is None else None)
    if fresh is not None:
        leave_to_full_pass(store, result, fresh.since, settings.breaker_share, settings.breaker_floor)
    if write:
        with store.unit():
            policy.apply(store, result)
            store.execute("""insert into detect_runs (now, ran_at, seconds, findings, decisions, held, kind)
                             values (?, ?, ?, ?, ?, ?, ?)""",
                          [now, datetime.fromtimestamp(clock(), timezone.utc).replace(tzinfo=None), clock() - started, len(found),
                           len(result.applied), result.held_reasons, "full" if fresh is None else "fresh"])
    return result


def _counts(decisions) -> dict:
    """Decisions by what becomes of them, each counted once: in force, held by the circuit
    breaker (per rule), or simulated (never enforced, never held)."""
    held = Counter(d.rule for d in decisions if d.held)
    return {"total": len(decisions), "enforced": sum(1 for d in decisions if not d.held and not d.simulated),
            "held": sum(held.values()), "simulated": sum(1 for d in decisions if d.simulated and not d.held),
            "held_by_rule": dict(sorted(held.items()))}


def pass_report(result: policy.PassResult) -> dict:
    """What a pass found and decided, as `detect --json` prints it (and POST /v1/admin/detect answers)."""
    summary = {"findings": len(result.findings), "new": _counts(result.new), "extended": _counts(result.extended),
               "allowlisted": len(result.allowlisted), "unbanned": len(result.unbanned)}
    return {"now": result.now.isoformat(), "summary": summary,
            "held": [{"rule": h.rule, "reason": h.reason, "ids": [d.id for d in h.decisions]} for h in result.held],
            "findings": [{"rule": f.rule.name, "entity": f.entity, "kind": f.rule.entity, "action": f.rule.action,
                          "simulated": f.rule.simulate, "reason": f.reason} for f in result.findings],
            "new": [d.as_dict() for d in result.new], "extended": [d.as_dict() for d in result.extended],
            "allowlisted": [{"rule": f.rule.name, "entity": f.entity, "why": why} for f, why in result.allowlisted],
            "unbanned": [{"rule": f.rule.name, "entity": f.entity, "why": why} for f, why in result.unbanned]}

"""One detection pass: roll up, compute the features each rule needs, evaluate, decide."""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

from rules import features, policy
from rules.engine import Rule
from rules.rollup import roll_up


# Always computed, so that every decision's evidence shows the size of what it judged.
CORE = {"requests", "bytes", "pulls", "blob_bytes", "addresses"}


def latest_event_time(store) -> datetime | None:
    return store.value("select max(ts) from events")


def find(store, rules: list[Rule], now: datetime, hosting) -> list[policy.Finding]:
    """Every rule's findings at ``now``; features are computed once per (entity, window)."""
    groups: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for r in rules:
        groups[(r.entity, r.window)].append(r)
    found = []
    cols = ["entity", *features.NAMES]
    for (entity, window), group in sorted(groups.items()):
        start, end = features.window_bounds(now, window)
        needed = set().union(*(r.uses for r in group)) | CORE
        sql = features.features_sql(entity, needed=needed)
        store.execute(f"create or replace temp table feat as {sql}",
                      features.params(sql, start=start, end=end, hosting=list(hosting)))
        for rule in group:
            for row in store.execute(f"select * from feat where ({rule.where}) order by entity"):
                values = dict(zip(cols, row))
                entity_value = values.pop("entity")
                found.append(policy.Finding(rule, entity_value, values, rule.explain(values)))
    store.execute("drop table if exists feat")    # ~25 MB of DuckDB's memory otherwise held until the next pass
    return found


def detect(store, settings, rules: list[Rule], now: datetime, write: bool = True,
           clock=time.time) -> policy.PassResult:
    """Judge the windows that end at ``now``: the wall clock live, a pinned time in a replay."""
    started = clock()
    roll_up(store)
    found = find(store, rules, now, settings.hosting_asns)
    result = policy.plan(store, found, now, settings.breaker_share, settings.breaker_floor)
    if write:
        store.execute("begin")
        try:
            policy.apply(store, result)
            store.execute("insert into detect_runs values (?, ?, ?, ?, ?, ?)",
                          [now, datetime.fromtimestamp(clock(), timezone.utc).replace(tzinfo=None), clock() - started, len(found),
                           len(result.applied), result.held_reasons])
            store.execute("commit")
        except BaseException:
            store.execute("rollback")
            raise
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

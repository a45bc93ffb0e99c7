"""The budget guard inside serve: a scheduled check of the month's bytes against the budget, the
webhook for each level crossed (once a month each), and the anonymous tier's tightening, real
when budget_tighten is on (through enforcer.changes, audited as budget-guard, restored at the
next month), said and remembered when not. Also the report job of the 1st."""
from __future__ import annotations

import logging
from datetime import datetime

from enforcer import changes
from reports import budget as budget_mod
from reports import guard

log = logging.getLogger("pullwarden.budget")


def check(services, post=guard.post) -> dict:
    """One check; returns the plan it carried out."""
    cfg = services.settings
    now = services.clock()
    with services.analytics() as store:        # a month of roll-ups: waits for an ingest slice, like the dashboard's
        status = budget_mod.status(store, cfg.report_timezone, now)
        state = guard.memory(store)
    if status["month"] is None:
        return {}
    todo = guard.plan(status, state, cfg.budget_tighten, cfg.budget_tighten_tier)
    if state.get("month") != status["month"]:
        state = {"month": status["month"], "notified": [], "actions": [], "tightened": state.get("tightened")}
    if todo["restore"]:
        _restore(services, todo["restore"], status, now)
        state["tightened"] = None
        state["actions"].append({"at": now, "what": "restore", "tier": todo["restore"]["previous"]})
    if todo["tighten"]:
        action = _tighten(services, todo["tighten"], status, now)
        state["actions"].append(action)
        if not action["simulated"]:
            state["tightened"] = {"month": status["month"], "previous": action["previous"], "tier": action["tier"]}
    for level in todo["announce"]:
        log.warning("budget %s: %s of %s bytes used, %s projected (%s)", level, status["used_bytes"],
                    status["budget_bytes"], status["projected_bytes"], status["month"])
        if cfg.budget_webhook:
            failed = post(cfg.budget_webhook, guard.payload(status, level, now, state["actions"][-1]
                                                            if state["actions"] else None))
            if failed:          # not remembered: the next check tries again
                log.warning("budget webhook %s: %s", cfg.budget_webhook, failed)
                continue
        state["notified"].append(level)
    state["last"] = {"at": now, "month": status["month"], "as_of": status["as_of"],
                     "budget_bytes": status["budget_bytes"], "used_bytes": status["used_bytes"],
                     "projected_bytes": status["projected_bytes"], **status["guard"]}
    with services.lock:
        guard.save(services.store, state)
    return todo


def _tighten(services, what: dict, status: dict, now: datetime) -> dict:
    with services.store.reading() as store:
        previous = store.value("select value from kv where key = 'anonymous_tier'") or "anonymous"
        authenticated = store.value("select value from kv where key = 'authenticated_tier'") or "authenticated"
    reason = (f"budget guard: {status['month']} projected {status['projected_bytes'] / budget_mod.TIB:.2f} TiB "
              f"against a budget of {status['budget_bytes'] / budget_mod.TIB:g} TiB "
              f"({status['used_bytes'] / budget_mod.TIB:.2f} TiB used)")
    action = {"at": now, "what": "tighten", "tier": what["tier"], "previous": previous,
              "simulated": what["simulated"], "reason": reason}
    if what["simulated"]:
        log.warning("%s: would move anonymous traffic from tier %s to %s (budget_tighten is off)",
                    reason, previous, what["tier"])
        return action
    if previous == what["tier"]:
        return {**action, "simulated": False, "note": "already in that tier"}
    with services.lock:
        changes.set_default_tiers(services.store, guard.ACTOR, what["tier"], authenticated, reason, now)
    services.publisher.publish()
    log.warning("%s: anonymous traffic moved from tier %s to %s", reason, previous, what["tier"])
    return action


def _restore(services, tightened: dict, status: dict, now: datetime) -> None:
    with services.store.reading() as store:
        current = store.value("select value from kv where key = 'anonymous_tier'")
        authenticated = store.value("select value from kv where key = 'authenticated_tier'") or "authenticated"
    if current != tightened["tier"]:        # an admin changed it since: theirs stands
        return
    with services.lock:
        changes.set_default_tiers(services.store, guard.ACTOR, tightened["previous"], authenticated,
                                  f"budget guard: a new month ({status['month']}), the budget is not at risk", now)
    services.publisher.publish()


def monthly_report(services) -> str:
    """The report of the month before (in report_timezone), frozen; run on the 1st."""
    from reports import archive
    cfg = services.settings
    now = services.clock()
    month = budget_mod.previous_month(budget_mod.month_of(now, budget_mod.zone(cfg.report_timezone)))

    def write(fn):
        with services.lock:
            fn(services.store)
    with services.analytics() as store:
        prepared = archive.prepare(store, month, cfg, now)
    r = archive.finish(prepared, write)
    log.info("monthly report %s: %s bytes, frozen %s, inputs sha256 %s", month,
             r.summary()["total_bytes"], r.frozen, r.inputs_sha256)
    return month

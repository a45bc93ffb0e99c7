"""The budget guard's memory and its webhook: which levels were announced this month, and what
was done (or, simulated, would have been done) about the anonymous tier.

The memory is one kv row (``budget_guard``), so a restart of serve does not announce a level
twice. The tier change itself is the enforcer's (enforcer/budget_guard.py): this module only
says what should happen.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime

KEY = "budget_guard"
ACT_ON = ("projected", "100%")      # the levels at which the anonymous tier is tightened
ACTOR = "budget-guard"


def memory(store) -> dict:
    raw = store.value("select value from kv where key = ?", [KEY])
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def save(store, state: dict) -> None:
    store.execute("insert or replace into kv values (?, ?)", [KEY, json.dumps(state, default=str, sort_keys=True)])


def remembered(store, month: str | None) -> dict:
    """What the guard announced and did in ``month`` (and a tightening still in force)."""
    state = memory(store)
    mine = state.get("month") == month
    return {"notified": state.get("notified", []) if mine else [], "actions": state.get("actions", []) if mine else [],
            "tightened": state.get("tightened")}


def plan(status: dict, state: dict, tighten: bool, tier: str) -> dict:
    """What to do now: levels to announce (crossed this month and not announced), whether to
    tighten the anonymous tier (or to say it would), whether to restore it (a new month)."""
    month = status["month"]
    fresh = state.get("month") == month
    announced = set(state.get("notified", [])) if fresh else set()
    crossed = status["guard"]["crossed"]
    todo = [c for c in crossed if c not in announced]
    tightened = state.get("tightened")
    act = any(c in ACT_ON for c in crossed)
    out = {"announce": todo, "tighten": None, "restore": None}
    if tightened and tightened.get("month") != month and not act:
        out["restore"] = tightened
    elif act and not tightened:
        did = [a for a in (state.get("actions", []) if fresh else []) if a.get("what") == "tighten"]
        if tighten or not did:          # simulated: said once a month
            out["tighten"] = {"tier": tier, "simulated": not tighten}
    return out


def outlook(status: dict, state: dict, tighten: bool, tier: str, anonymous: str) -> dict | None:
    """The guard's action on the anonymous tier for this month, as a person reads it: done (a
    tightening in force), done simulated (said at a check this month), or what the next check
    will do (budget_tighten off: simulated) — known from the status alone, so that a first look
    before the guard's first check already says it. None: nothing to do at this level."""
    tightened = state.get("tightened")
    if tightened and tightened.get("month") == status["month"]:
        return {"what": "tighten", "tier": tightened["tier"], "previous": tightened["previous"], "simulated": False,
                "done": True}
    if not any(c in ACT_ON for c in status["guard"]["crossed"]):
        return None
    said = [a for a in (state.get("actions", []) if state.get("month") == status["month"] else [])
            if a.get("what") == "tighten"]
    if said:
        return {**said[-1], "done": True}
    return {"what": "tighten", "tier": tier, "previous": anonymous, "simulated": not tighten, "done": False}


def sentence(action: dict | None) -> str:
    """The outlook in words."""
    if not action:
        return "nothing to do"
    move = f"anonymous traffic from tier {action['previous']} to {action['tier']}"
    if action["simulated"]:
        return f"would move {move} (simulated: budget_tighten is off)"
    return f"moved {move}" if action["done"] else f"will move {move} at its next check"


def post(url: str, payload: dict, timeout: float = 10.0) -> str | None:
    """POST the payload as JSON; None when it landed (2xx), else why not."""
    req = urllib.request.Request(url, method="POST", data=json.dumps(payload, default=str).encode(),
                                 headers={"Content-Type": "application/json", "User-Agent": "pullwarden-budget-guard"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


def payload(status: dict, level: str, now: datetime, action: dict | None) -> dict:
    return {"event": "pullwarden.budget", "level": level, "month": status["month"], "timezone": status["timezone"],
            "as_of": status["as_of"], "at": now, "budget_bytes": status["budget_bytes"],
            "used_bytes": status["used_bytes"], "projected_bytes": status["projected_bytes"],
            "used_share": status["guard"]["used_share"], "projected_share": status["guard"]["projected_share"],
            "action": action}


def last(store) -> dict:
    """The last check's figures and level, with what was done: for /healthz and /metrics, which
    must stay cheap (no month of roll-ups read per probe)."""
    state = memory(store)
    if not state.get("last"):
        return {"level": "unknown", "note": "the budget guard has not run yet"}
    return {**state["last"], "tightened": state.get("tightened"),
            "actions": [a for a in state.get("actions", []) if state.get("month") == state["last"].get("month")]}

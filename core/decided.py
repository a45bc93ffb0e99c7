"""Decisions as a person reads them: one line per decided entity, naming every rule that decided.

Two rules that match one address (``reseller-proxy`` and ``reseller-relay``, ``tag-scanner`` and
``error-storm``) each make a decision of their own, and the store and the API keep them so (each
has its own reason, duration and escalation); a list for people shows the entity once, with the
strongest effect, the latest end and the rules. Used by the CLI's demo summary and the dashboard's
Decisions page."""
from __future__ import annotations

from typing import Callable

STRENGTH = {"ban": 0, "throttle": 1, "boost": 2}       # the effect an entity is listed under


def by_entity(rows: list[dict], state: Callable[[dict], str] | None = None) -> list[dict]:
    """``rows`` (decisions as the store or the API gives them) grouped by (scope, value) — and
    by ``state(row)`` when given, so that a held or ended decision is not shown as in force —
    strongest effect first."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scope"], str(r["value"]), state(r) if state else ""), []).append(r)
    out = []
    for (scope, value, st), rs in groups.items():
        rs = sorted(rs, key=lambda r: str(r.get("until") or ""), reverse=True)
        rs.sort(key=lambda r: STRENGTH.get(r["effect"], len(STRENGTH)))          # stable: latest end first
        first = rs[0]
        rules = list(dict.fromkeys(r.get("rule") or "(admin)" for r in rs))
        out.append({"scope": scope, "value": value, "state": st, "effect": first["effect"], "tier": first.get("tier"),
                    "rules": rules, "ids": [r["id"] for r in rs], "decisions": len(rs),
                    "until": max((r["until"] for r in rs if r.get("until") is not None), default=None, key=str),
                    "reason": first.get("reason"),
                    "reasons": [f"[{r.get('rule') or '(admin)'}] {r.get('reason')}" for r in rs]})
    out.sort(key=lambda g: (STRENGTH.get(g["effect"], len(STRENGTH)), g["state"], g["scope"], g["value"]))
    return out

"""Admin changes over HTTP (admin keys only): the operations of enforcer/changes.py, each
followed by a new policy version."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from core import values
from enforcer import changes
from enforcer.deps import AdminKey, ServicesDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Scope = Literal["ip", "range", "asn", "user"]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]


class Body(BaseModel):
    """Every request body: a field the route does not know is a 422, never ignored (a
    misspelt limit must not quietly make a tier unlimited)."""
    model_config = ConfigDict(extra="forbid")


class DecisionIn(Body):
    scope: Scope
    value: str = Field(min_length=1, max_length=200)
    duration: str = Field(default="24h", pattern=r"^\d{1,6}[smhd]$")
    reason: Reason
    tier: str | None = Field(default=None, max_length=50)
    force: bool = Field(default=False, description="ban or throttle anyway a range wider than the limit, loopback, "
                                                   "link-local, unspecified or multicast space, this server or a "
                                                   "trusted proxy (audited)")


class ReasonIn(Body):
    reason: Reason


class Changed(BaseModel):
    ok: bool = True
    id: int | None = None
    revoked: int | None = None
    approved: int | None = None
    changed: int | None = None
    unchanged: int | None = None
    policy_version: int


def _apply(services, fn, *args, **kwargs):
    """Run one change under the store's lock; bad input is a 422, a missing thing a 404."""
    try:
        with services.lock, services.store.unit():      # the change and its audit row, or neither
            result = fn(services.store, *args, now=services.clock(), **kwargs)
    except changes.Conflict as e:
        raise HTTPException(409, str(e)) from None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    return result, services.publisher.publish().version


@router.post("/bans", response_model=Changed, status_code=201)
def add_ban(services: ServicesDep, who: AdminKey, body: DecisionIn) -> dict:
    new_id, version = _apply(services, changes.add_decision, who.name, body.scope, body.value, "ban", body.duration,
                             body.reason, guard=changes.guard(services.settings), force=body.force)
    return {"id": new_id, "policy_version": version}


@router.post("/assignments", response_model=Changed, status_code=201)
def add_assignment(services: ServicesDep, who: AdminKey, body: DecisionIn) -> dict:
    """Put an entity in a tier: `throttled`, `heavy`, or a generous one (a boost)."""
    new_id, version = _apply(services, changes.add_decision, who.name, body.scope, body.value,
                             changes.assignment_effect(body.tier or ""), body.duration, body.reason, tier=body.tier,
                             guard=changes.guard(services.settings), force=body.force)
    return {"id": new_id, "policy_version": version}


@router.delete("/decisions/{decision_id}", response_model=Changed)
def revoke(services: ServicesDep, who: AdminKey, decision_id: Annotated[int, Path(ge=1, le=2**62)],
           body: ReasonIn) -> dict:
    """Unban (or end a tier assignment) now."""
    _, version = _apply(services, changes.revoke, who.name, decision_id, body.reason)
    return {"id": decision_id, "policy_version": version}


class HeldIn(Body):
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(min_length=1, max_length=100000)
    reason: Reason


@router.post("/decisions/approve", response_model=Changed)
def approve_held(services: ServicesDep, who: AdminKey, body: HeldIn) -> dict:
    """Put decisions the circuit breaker held in force (GET /v1/stats/decisions?held=true lists them)."""
    n, version = _apply(services, changes.approve, who.name, body.ids, body.reason)
    return {"approved": n, "policy_version": version}


@router.post("/decisions/drop", response_model=Changed)
def drop_held(services: ServicesDep, who: AdminKey, body: HeldIn) -> dict:
    """Revoke decisions the circuit breaker held."""
    n, version = _apply(services, changes.drop, who.name, body.ids, body.reason)
    return {"revoked": n, "policy_version": version}


def _limit(field: str, description: str | None = None):
    low, high = values.TIER_LIMITS[field]
    return Field(default=None, ge=low, le=high, description=description)


class TierIn(Body):
    requests_per_minute: int | None = _limit("requests_per_minute")
    burst: int | None = _limit("burst", "requests taken at once above the rate (nginx limit_req burst, nodelay); "
                                        "none: twice the requests a minute")
    concurrent: int | None = _limit("concurrent")
    blob_bytes_per_second: int | None = _limit("blob_bytes_per_second")
    window_bytes: int | None = _limit("window_bytes")
    window_seconds: int | None = _limit("window_seconds")
    reason: Reason


# checked by core/values.tier_name in the change, as the command line and the agent check it
TierName = Annotated[str, Path(max_length=100)]


@router.put("/tiers/{name}", response_model=Changed)
def put_tier(services: ServicesDep, who: AdminKey, name: TierName, body: TierIn) -> dict:
    """Set the limits given (null: unlimited); the others keep their value (a new tier's: unlimited)."""
    limits = body.model_dump(exclude={"reason"}, exclude_unset=True)
    _, version = _apply(services, changes.set_tier, who.name, name, limits, body.reason)
    return {"policy_version": version}


@router.delete("/tiers/{name}", response_model=Changed, responses={409: {"description": "In use: names each use"}})
def delete_tier(services: ServicesDep, who: AdminKey, name: TierName, body: ReasonIn) -> dict:
    """Remove a tier; refused (409) while anything uses it: a decision in force or held, a
    default tier, the setting budget_tighten_tier, a rule; `unlimited` always."""
    _, version = _apply(services, changes.delete_tier, who.name, name, body.reason, settings=services.settings)
    return {"policy_version": version}


class DefaultsIn(Body):
    anonymous: str = Field(max_length=40)
    authenticated: str = Field(max_length=40)
    reason: Reason


@router.put("/default-tiers", response_model=Changed)
def put_defaults(services: ServicesDep, who: AdminKey, body: DefaultsIn) -> dict:
    _, version = _apply(services, changes.set_default_tiers, who.name, body.anonymous, body.authenticated, body.reason)
    return {"policy_version": version}


class ImagesIn(Body):
    patterns: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(min_length=1, max_length=5000)
    reason: Reason


ListName = Annotated[Literal["allowed", "unlimited", "blocked"], Path()]


@router.post("/images/{name}", response_model=Changed)
def add_images(services: ServicesDep, who: AdminKey, name: ListName, body: ImagesIn) -> dict:
    (n, same), version = _apply(services, changes.change_images, who.name, name, body.patterns, True, body.reason)
    return {"changed": n, "unchanged": same, "policy_version": version}


@router.delete("/images/{name}", response_model=Changed)
def remove_images(services: ServicesDep, who: AdminKey, name: ListName, body: ImagesIn) -> dict:
    """Remove patterns; a pattern the list does not hold is a 404 and nothing is removed."""
    (n, same), version = _apply(services, changes.change_images, who.name, name, body.patterns, False, body.reason)
    return {"changed": n, "unchanged": same, "policy_version": version}


class AllowIn(Body):
    kind: Literal["ip", "cidr", "asn", "user"]
    value: str = Field(min_length=1, max_length=200)
    reason: Reason


@router.post("/allowlist", response_model=Changed, status_code=201)
def add_allow(services: ServicesDep, who: AdminKey, body: AllowIn) -> dict:
    revoked, version = _apply(services, changes.allow, who.name, body.kind, body.value, body.reason,
                              guard=changes.guard(services.settings))
    return {"revoked": revoked, "policy_version": version}


class AllowOut(BaseModel):
    kind: str
    value: str
    reason: str
    created_at: datetime
    until: datetime | None


@router.get("/allowlist", response_model=list[AllowOut])
def list_allow(services: ServicesDep, who: AdminKey) -> list[dict]:
    with services.store.reading() as store:
        return store.records("select kind, value, reason, created_at, until from allowlist order by kind, value")


class DisallowIn(Body):
    kind: Literal["ip", "cidr", "asn", "user"]
    value: str = Field(min_length=1, max_length=200)
    reason: Reason


@router.delete("/allowlist", response_model=Changed)
def remove_allow(services: ServicesDep, who: AdminKey, body: DisallowIn) -> dict:
    """Remove an entry; 404 when there is none."""
    _, version = _apply(services, changes.disallow, who.name, body.kind, body.value, body.reason)
    return {"policy_version": version}


class BudgetIn(Body):
    monthly_tib: float = Field(gt=0, le=10**6)
    reason: Reason


@router.put("/budget", response_model=Changed)
def put_budget(services: ServicesDep, who: AdminKey, body: BudgetIn) -> dict:
    _, version = _apply(services, changes.set_budget, who.name, body.monthly_tib, body.reason)
    return {"policy_version": version}


@router.get("/audit")
def audit_log(services: ServicesDep, who: AdminKey, limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> list[dict]:
    with services.lock:
        rows = services.store.execute("select * from audit order by ts desc limit ?", [limit])
    cols = ["ts", "actor", "action", "target", "details", "reason"]
    return [dict(zip(cols, r)) for r in rows]


@router.post("/detect")
def detect_now(services: ServicesDep, who: AdminKey) -> dict:
    """A detection pass now, at the server's clock (what `pullwarden detect` does while serve
    holds the file): what it found and decided, as `detect --json` prints it."""
    from enforcer.jobs import detection
    from rules.detect import pass_report
    from rules.engine import RuleError
    try:
        result = detection(services, lower=False)
    except RuleError as e:
        raise HTTPException(422, f"the rules do not load: {e}") from None
    if result is None:
        raise HTTPException(503, "the server is stopping")
    with services.lock:
        changes.audit(services.store, who.name, "detect", None, {"findings": len(result.findings)},
                      "asked through the API", services.clock())
    return pass_report(result)


@router.post("/prune")
def prune_now(services: ServicesDep, who: AdminKey) -> dict:
    """Delete findings, ended decisions and the run log older than keep_days, and raw events older
    than keep_events_days once rolled up (serve does it daily)."""
    from enforcer.jobs import prune
    return prune(services, lower=False)

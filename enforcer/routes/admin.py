"""Admin changes: bans and unbans, tier assignments, tier definitions, the allowlist, image
lists, the monthly budget. Every change is audited (who, when, what, why) and published."""
from __future__ import annotations

import ipaddress
import json
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field, field_validator

from enforcer.deps import AdminKey, ServicesDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Scope = Literal["ip", "range", "asn", "user"]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> int:
    try:
        return int(text[:-1]) * _UNITS[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"bad duration {text!r}: use 30m, 24h, 7d") from None


def _value(scope: str, value: str) -> str:
    try:
        if scope == "ip":
            return str(ipaddress.ip_address(value))
        if scope == "range":
            return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"not a valid {scope}: {value!r}") from None
    if scope == "asn" and not value.removeprefix("AS").isdigit():
        raise ValueError(f"not an AS number: {value!r}")
    return value.removeprefix("AS") if scope == "asn" else value


class DecisionIn(BaseModel):
    scope: Scope
    value: str = Field(min_length=1, max_length=200)
    duration: str = Field(default="24h", pattern=r"^\d{1,6}[smhd]$")
    reason: str = Field(min_length=1, max_length=500)
    tier: str | None = Field(default=None, max_length=50)


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class Changed(BaseModel):
    ok: bool = True
    id: int | None = None
    policy_version: int


def _publish(services) -> int:
    return services.publisher.publish().version


def _decide(services, who, body: DecisionIn, effect: str) -> dict:
    try:
        value = _value(body.scope, body.value)
        seconds = _seconds(body.duration)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    if effect != "ban":
        with services.lock:
            if not body.tier or not services.store.value("select count(*) from tiers where name = ?", [body.tier]):
                raise HTTPException(422, f"unknown tier {body.tier!r}")
    now = services.clock()
    with services.lock:
        new_id = services.store.value("""
            insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, evidence, created_at, until)
            values (nextval('decision_seq'), ?, ?, ?, ?, null, 'manual', ?, ?, ?, ?) returning id""",
            [body.scope, value, effect, body.tier if effect != "ban" else None, body.reason,
             json.dumps({"by": who.name}), now, now + timedelta(seconds=seconds)])
    services.audit(who.name, f"add {effect}", f"{body.scope} {value}", body.model_dump(), body.reason)
    return {"id": new_id, "policy_version": _publish(services)}


@router.post("/bans", response_model=Changed, status_code=201)
def add_ban(services: ServicesDep, who: AdminKey, body: DecisionIn) -> dict:
    return _decide(services, who, body, "ban")


@router.post("/assignments", response_model=Changed, status_code=201)
def add_assignment(services: ServicesDep, who: AdminKey, body: DecisionIn) -> dict:
    """Put an entity in a tier: `throttled`, `heavy`, or a generous one (a boost)."""
    with services.lock:
        row = services.store.execute("select requests_per_minute from tiers where name = ?", [body.tier or ""])
    effect = "boost" if body.tier in ("unlimited", "authenticated") else "throttle"
    if not row:
        raise HTTPException(422, f"unknown tier {body.tier!r}")
    return _decide(services, who, body, effect)


@router.delete("/decisions/{decision_id}", response_model=Changed)
def revoke(services: ServicesDep, who: AdminKey, decision_id: Annotated[int, Path(ge=1)], body: ReasonIn) -> dict:
    """Unban (or end a tier assignment) now."""
    with services.lock:
        row = services.store.execute("select scope, value, effect from decisions where id = ? and revoked_at is null",
                                     [decision_id])
        if not row:
            raise HTTPException(404, f"no decision #{decision_id} in force")
        services.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?",
                               [services.clock(), decision_id])
    services.audit(who.name, f"revoke {row[0][2]}", f"{row[0][0]} {row[0][1]}", {"id": decision_id}, body.reason)
    return {"id": decision_id, "policy_version": _publish(services)}


class TierIn(BaseModel):
    requests_per_minute: int | None = Field(default=None, ge=1, le=10**6)
    concurrent: int | None = Field(default=None, ge=1, le=10**5)
    blob_bytes_per_second: int | None = Field(default=None, ge=1024, le=10**12)
    window_bytes: int | None = Field(default=None, ge=1, le=10**16)
    window_seconds: int | None = Field(default=None, ge=60, le=10**7)
    reason: str = Field(min_length=1, max_length=500)


@router.put("/tiers/{name}", response_model=Changed)
def put_tier(services: ServicesDep, who: AdminKey, name: Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,40}$")],
             body: TierIn) -> dict:
    limits = body.model_dump(exclude={"reason"})
    with services.lock:
        services.store.execute("insert or replace into tiers values (?, ?, ?, ?, ?, ?)", [name, *limits.values()])
    services.audit(who.name, "set tier", name, limits, body.reason)
    return {"policy_version": _publish(services)}


class DefaultsIn(BaseModel):
    anonymous: str = Field(max_length=40)
    authenticated: str = Field(max_length=40)
    reason: str = Field(min_length=1, max_length=500)


@router.put("/default-tiers", response_model=Changed)
def put_defaults(services: ServicesDep, who: AdminKey, body: DefaultsIn) -> dict:
    with services.lock:
        known = {r[0] for r in services.store.execute("select name from tiers")}
        for t in (body.anonymous, body.authenticated):
            if t not in known:
                raise HTTPException(422, f"unknown tier {t!r}")
        services.store.execute("insert or replace into kv values ('anonymous_tier', ?), ('authenticated_tier', ?)",
                               [body.anonymous, body.authenticated])
    services.audit(who.name, "set default tiers", None, body.model_dump(), body.reason)
    return {"policy_version": _publish(services)}


class ImagesIn(BaseModel):
    patterns: list[str] = Field(min_length=1, max_length=5000)
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("patterns")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        out = [p.strip() for p in v]
        if any(not p or len(p) > 300 or any(c.isspace() for c in p) for p in out):
            raise ValueError("a pattern is a registry path without spaces, like docker.io/library/* or ghcr.io/**")
        return out


ListName = Annotated[Literal["allowed", "unlimited", "blocked"], Path()]


@router.post("/images/{name}", response_model=Changed)
def add_images(services: ServicesDep, who: AdminKey, name: ListName, body: ImagesIn) -> dict:
    with services.lock:
        for p in body.patterns:
            services.store.execute("insert or replace into image_lists values (?, ?, ?, ?)",
                                   [name, p, body.reason, services.clock()])
    services.audit(who.name, f"add to {name} images", None, {"patterns": body.patterns}, body.reason)
    return {"policy_version": _publish(services)}


@router.delete("/images/{name}", response_model=Changed)
def remove_images(services: ServicesDep, who: AdminKey, name: ListName, body: ImagesIn) -> dict:
    with services.lock:
        for p in body.patterns:
            services.store.execute("delete from image_lists where list = ? and pattern = ?", [name, p])
    services.audit(who.name, f"remove from {name} images", None, {"patterns": body.patterns}, body.reason)
    return {"policy_version": _publish(services)}


class AllowIn(BaseModel):
    kind: Literal["ip", "cidr", "asn", "user"]
    value: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=500)


@router.post("/allowlist", response_model=Changed, status_code=201)
def add_allow(services: ServicesDep, who: AdminKey, body: AllowIn) -> dict:
    from core.allowlist import revoke_allowlisted
    try:
        value = _value({"cidr": "range"}.get(body.kind, body.kind), body.value)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    now = services.clock()
    with services.lock:
        services.store.execute("insert or replace into allowlist values (?, ?, ?, ?, null)",
                               [body.kind, value, body.reason, now])
        revoked = revoke_allowlisted(services.store, body.kind, value, now)
    services.audit(who.name, "allow", f"{body.kind} {value}", {"revoked": revoked}, body.reason)
    return {"policy_version": _publish(services)}


class BudgetIn(BaseModel):
    monthly_tib: float = Field(gt=0, le=10**6)
    reason: str = Field(min_length=1, max_length=500)


@router.put("/budget", response_model=Changed)
def put_budget(services: ServicesDep, who: AdminKey, body: BudgetIn) -> dict:
    with services.lock:
        services.store.execute("insert or replace into kv values ('monthly_budget_tib', ?)", [str(body.monthly_tib)])
    services.audit(who.name, "set budget", None, body.model_dump(), body.reason)
    return {"policy_version": services.publisher.current.version}


@router.get("/audit")
def audit_log(services: ServicesDep, who: AdminKey, limit: int = 100) -> list[dict]:
    with services.lock:
        rows = services.store.execute("select * from audit order by ts desc limit ?", [max(1, min(limit, 10000))])
    cols = ["ts", "actor", "action", "target", "details", "reason"]
    return [dict(zip(cols, r)) for r in rows]

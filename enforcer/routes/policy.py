"""GET /v1/policy (ETag, 304), /v1/policy/changes (deltas, 410 when too old), /v1/check."""
from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from enforcer.deps import ProxyKey, ServicesDep
from enforcer.imagelist import host_registry, matches
from enforcer.snapshot import REQUESTS, unzipped

router = APIRouter(prefix="/v1", tags=["policy"])


def takes_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip: its own weight if it names gzip, else the
    weight of `*` (RFC 9110 12.5.3); a weight of 0 refuses."""
    weights: dict[str, float] = {}
    for part in (accept_encoding or "").lower().split(","):
        coding, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            weights[coding] = q
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


@router.get("/policy", responses={200: {"description": "The current policy (JSON)"}, 304: {"description": "Unchanged"}})
async def get_policy(services: ServicesDep, who: ProxyKey,
                     if_none_match: Annotated[str | None, Header()] = None,
                     accept_encoding: Annotated[str | None, Header()] = None) -> Response:
    """The policy is held gzipped: sent as it is to a client that takes gzip (15 MB of JSON
    for 100,000 bans is under 2 MB that way), unpacked on the fly for one that does not."""
    current = services.publisher.current
    services.polls[who.name] += 1
    gzipped = takes_gzip(accept_encoding)
    # each coding has its own strong ETag; either one names this version for If-None-Match
    etag = f'"{current.version}+gzip"' if gzipped else current.etag
    headers = {"ETag": etag, "Vary": "Accept-Encoding",
               "Cache-Control": f"max-age={services.settings.policy_max_age}"}
    if if_none_match and {t.strip() for t in if_none_match.split(",")} & {current.etag, f'"{current.version}+gzip"'}:
        return Response(status_code=304, headers=headers)
    if gzipped:
        return Response(current.body, media_type="application/json", headers={**headers, "Content-Encoding": "gzip"})
    return StreamingResponse(unzipped(current.body), media_type="application/json", headers=headers)


class Changes(BaseModel):
    since: int
    version: int
    upsert: dict[str, list[dict[str, Any]]]
    remove: dict[str, list[dict[str, Any]]]
    sections: dict[str, Any]


@router.get("/policy/changes", response_model=Changes, responses={410: {"description": "Too old or too big: fetch /v1/policy"}})
def get_changes(services: ServicesDep, who: ProxyKey, since: Annotated[int, Query(ge=0)]) -> dict:
    # def, not async def: a big delta must not stall the event loop. One bigger than a quarter
    # of the policy is refused: the whole policy is held gzipped and costs the server nothing.
    services.polls[who.name] += 1
    delta = services.publisher.changes(since, limit=0.25)
    if delta is None:
        raise HTTPException(410, f"no delta from version {since} (too old, or as big as the policy): "
                                 "fetch /v1/policy")
    return delta


class Verdict(BaseModel):
    allowed: bool
    tier: str | None
    limits: dict[str, Any] | None
    why: list[str]
    policy_version: int


_SPECIFIC = {"ip": 0, "user": 1, "range": 2, "asn": 3}


def _rank(e) -> tuple:
    """Specific beats general: an address, a user, a range (the longer prefix first, as nginx's
    geo takes it), an AS number; at the same place a throttle beats a boost."""
    width = -ipaddress.ip_network(e.value, strict=False).prefixlen if e.scope == "range" else 0
    return _SPECIFIC[e.scope], width, e.effect != "throttle"


def asn_of(services, addr) -> str | None:
    """An address's AS number: the writer has it from the ingested ip_info; a read-only replica,
    which has no store, looks it up in its own asn_db (enforcer/replica.py)."""
    if services.store is None:
        return services.asn_of(addr)
    with services.store.reading() as store:
        return store.value("select cast(asn as varchar) from ip_info where ip = ?", [str(addr)])


@router.get("/check", response_model=Verdict)
def check(services: ServicesDep, who: ProxyKey, ip: str | None = None, image: str | None = None,
          user: str | None = None, host: str | None = None) -> dict:
    """The verdict for one request, the combining written once: a blocked image or one off the
    allow list is refused; an allowlisted address is never banned or throttled; a ban beats a
    tier; the most specific assignment sets the tier; an unlimited image lifts the limits of
    anyone not throttled. Every file the agent writes says the same, as far as its reader can.
    A short image name (`library/nginx`) is on the registry the request's ``host`` stands for,
    else on default_registry: the policy's requests section, as nginx reads it."""
    version = services.publisher.current
    policy = version.content
    registry = host_registry({**REQUESTS, **(policy.get("requests") or {})}, host)
    try:
        addr = ipaddress.ip_address(ip) if ip else None
    except ValueError:
        raise HTTPException(422, f"not an address: {ip!r}") from None
    if addr is not None and addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    asn = asn_of(services, addr) if addr is not None else None
    # a replica without asn_db cannot tell an address's AS number: said, never silently ignored
    blind = addr is not None and services.store is None and services.geo is None
    if blind:
        blind = version.cache.get("asn entries")
        if blind is None:           # once per version: 100,000 bans are not read on every request
            blind = version.cache["asn entries"] = any(k.startswith("asn:") for s in ("bans", "assignments")
                                                       for k in policy[s])

    def verdict(allowed: bool, tier: str | None, why: list[str]) -> dict:
        if blind:
            why = [*why, "AS-number decisions not applied: this read-only replica has no asn_db to look the "
                         "address up in"]
        return {"allowed": allowed, "tier": tier, "limits": policy["tiers"].get(tier) if tier else None,
                "why": why, "policy_version": version.version}
    images = policy["images"]
    if image and any(matches(p, image, registry) for p in images["blocked"]):
        return verdict(False, None, [f"image {image} is blocked"])
    if image and images["allowed"] and not any(matches(p, image, registry) for p in images["allowed"]):
        return verdict(False, None, [f"image {image} is not on the allow list"])
    allowlisted = addr is not None and version.allowlisted(addr)
    why = [f"{addr} is on the allowlist"] if allowlisted else []
    if not allowlisted:
        bans = version.covering("bans", addr, user, asn)
        if bans:
            return verdict(False, None, [f"banned ({e.scope} {e.value}) until {e.until}: {e.reason}" for e in bans])
    tier = policy["default_tiers"]["authenticated" if user else "anonymous"]
    why.append(f"{'authenticated' if user else 'anonymous'} default tier {tier}")
    assigned = sorted((e for e in version.covering("assignments", addr, user, asn)
                       if not (allowlisted and e.effect == "throttle")), key=_rank)
    throttled = bool(assigned) and assigned[0].effect == "throttle"
    if assigned:
        e = assigned[0]
        tier = e.tier
        why.append(f"{e.effect} to {tier} ({e.scope} {e.value}) until {e.until}: {e.reason}")
    if image and not throttled and any(matches(p, image, registry) for p in images["unlimited"]):
        tier = "unlimited"
        why.append(f"image {image} is on the unlimited list")
    return verdict(True, tier, why)

"""Read-only statistics for the dashboard (viewer keys): traffic, top entities, findings,
decisions, budget month to date."""
from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from enforcer.deps import ServicesDep, ViewerKey

router = APIRouter(prefix="/v1/stats", tags=["stats"])
TIB = 1 << 40


def _rows(services, sql: str, params=None) -> list[dict]:
    with services.store.reading() as store:
        return store.records(sql, params)


@router.get("/traffic")
def traffic(services: ServicesDep, who: ViewerKey, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 48) -> list[dict]:
    """Requests, bytes and addresses per hour (event time), newest last."""
    return _rows(services, """
        select hour, sum(requests) as requests, sum(bytes) as bytes, count(distinct client_ip) as addresses
        from facts_hourly where hour > (select max(hour) from facts_hourly) - to_hours(?)
        group by hour order by hour""", [hours])


@router.get("/top")
def top(services: ServicesDep, who: ViewerKey,
        by: Literal["address", "image", "user_agent", "asn"] = "address",
        hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24, limit: Annotated[int, Query(ge=1, le=1000)] = 20):
    key = {"address": "f.client_ip", "image": "f.registry || '/' || f.repository", "user_agent": "f.user_agent",
           "asn": "cast(i.asn as varchar) || ' ' || coalesce(any_value(i.as_org), '')"}[by]
    join = "left join ip_info i on i.ip = f.client_ip" if by == "asn" else ""
    group = "i.asn" if by == "asn" else "1"
    return _rows(services, f"""
        select {key} as entity, sum(requests) as requests, sum(f.bytes) as bytes
        from facts_hourly f {join}
        where hour > (select max(hour) from facts_hourly) - to_hours(?)
        group by {group} order by bytes desc limit ?""", [hours, limit])


@router.get("/findings")
def findings(services: ServicesDep, who: ViewerKey, limit: Annotated[int, Query(ge=1, le=5000)] = 200):
    return _rows(services, """select now, rule, entity_kind, entity, action, simulated, reason
                              from findings order by now desc, rule limit ?""", [limit])


@router.get("/decisions")
def decisions(services: ServicesDep, who: ViewerKey, active: bool = False, held: bool = False,
              limit: Annotated[int, Query(ge=1, le=100000)] = 500):
    """Decisions, newest change first; `held` is the circuit breaker's reason for keeping one out
    of force (null: applied). active: only those in force; held: only those waiting for an admin."""
    cond = ("where revoked_at is null and until > ? and not simulated and held is null" if active else
            "where revoked_at is null and until > ? and held is not null" if held else "where ? is not null")
    return _rows(services, f"""select id, seq, scope, value, effect, tier, rule, origin, reason, created_at, until,
                                      revoked_at, simulated, held from decisions {cond} order by seq desc limit ?""",
                 [services.clock(), limit])

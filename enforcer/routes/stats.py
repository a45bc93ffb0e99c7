"""Read-only statistics for the dashboard and the command line (viewer keys): overview,
traffic, top talkers, entities, explain, findings, decisions, rules, image lists and demand.

Each read runs on a connection of its own, on one thread at the jobs' lower CPU priority and
never during a checkpoint (``services.read()``): it does not wait for an ingest run or a
detection pass, and the proxies' polls, answered from memory, never wait for it.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from enforcer.deps import AnyKey, ServicesDep, ViewerKey
from enforcer.imagelist import image_name, matches
from reports import queries

router = APIRouter(prefix="/v1/stats", tags=["stats"])
whoami_router = APIRouter(prefix="/v1", tags=["stats"])
Hours = Annotated[int | None, Query(ge=1, le=24 * 400, description="the last N hours (instead of start/end)")]
When = Annotated[str | None, Query(description="ISO 8601 date or time, UTC unless it has an offset")]
Limit = Annotated[int, Query(ge=1, le=1000)]


@whoami_router.get("/whoami")
def whoami(who: AnyKey) -> dict:
    """The key's name and role: the dashboard shows actions to admin keys only."""
    return {"name": who.name, "role": who.role}


def _span(store, services, start: str | None, end: str | None, hours: int | None = None,
          days: int = 7, longest: int | None = None) -> queries.Span:
    try:
        e = queries.parse_when(end)
        s = queries.parse_when(start)
        if hours and s is None:
            e = e or queries.span(store, None, None, services.clock()).end
            s = e - timedelta(hours=hours)
        span = queries.span(store, s, e, services.clock(), days)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if longest and span.end - span.start > timedelta(days=longest):
        raise HTTPException(422, f"this range may span at most {longest} days")
    return span


def _filters(registry, asn, country, family, image, address) -> queries.Filters:
    return queries.Filters(registry=registry, asn=asn, country=country, family=family, image=image, address=address)


@router.get("/overview")
def overview(services: ServicesDep, who: ViewerKey, days: Annotated[int, Query(ge=1, le=90)] = 30) -> dict:
    """Today, the last 30 days by registry, decisions in force, how fresh the data is."""
    def run(store):
        return queries.overview(store, services.clock(), days)
    return services.read(run)


@router.get("/days")
def days(services: ServicesDep, who: ViewerKey, start: When = None, end: When = None) -> dict:
    """Totals per day and registry from the roll-up (what `pullwarden stats` prints), with the
    bytes that came from object-storage logs; by default every day stored."""
    try:
        since, until = queries.parse_when(start), queries.parse_when(end)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    def run(store):
        return queries.daily_totals(store, since, until)
    return services.read(run)


@router.get("/traffic")
def traffic(services: ServicesDep, who: ViewerKey, start: When = None, end: When = None, hours: Hours = None,
            bucket: Literal["hour", "day"] | None = None, registry: str | None = None,
            asn: Annotated[int | None, Query(ge=0, le=4294967295)] = None, country: str | None = None,
            family: str | None = None, image: str | None = None,
            address: Annotated[str | None, Query(description="an address or a CIDR")] = None) -> dict:
    """Requests, bytes, addresses and pulls per hour or day (event time), filtered, with the
    period before for comparison. Default: the 7 days up to the newest traffic, by hour up to
    3 days and by day beyond."""
    def run(store):
        s = _span(store, services, start, end, hours)
        chosen = bucket or ("hour" if s.end - s.start <= timedelta(days=3) else "day")
        try:
            return queries.traffic(store, s, chosen, _filters(registry, asn, country, family, image, address))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    return services.read(run)


@router.get("/top")
def top(services: ServicesDep, who: ViewerKey,
        by: Literal["address", "prefix", "asn", "country", "family", "image", "user", "user_agent"] = "address",
        start: When = None, end: When = None, hours: Hours = None, limit: Limit = 20,
        registry: str | None = None, asn: Annotated[int | None, Query(ge=0, le=4294967295)] = None,
        country: str | None = None, family: str | None = None, image: str | None = None,
        address: str | None = None) -> dict:
    """The biggest consumers: bytes, share, requests, pulls, addresses, bytes per address,
    repeat ratio."""
    def run(store):
        s = _span(store, services, start, end, hours)
        try:
            return queries.top(store, by, s, limit, _filters(registry, asn, country, family, image, address))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    return services.read(run)


@router.get("/entity")
def entity(services: ServicesDep, who: ViewerKey, kind: Literal["address", "prefix", "asn", "user"],
           value: Annotated[str, Query(min_length=1, max_length=200)]) -> dict:
    """One address, /24 or /64, ASN or user: its 7-day hourly profile, images, clients,
    decisions past and present and allowlist status."""
    def run(store):
        try:
            return queries.entity(store, kind, value, services.clock())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    return services.read(run)


@router.get("/explain")
def explain(services: ServicesDep, who: ViewerKey, target: Annotated[str, Query(min_length=1, max_length=100)]) -> dict:
    """Every rule's verdict on an address or a /24 or /64, with its numbers, at the server's
    clock: what `pullwarden explain --json` prints."""
    from rules.engine import RuleError, load_rules
    from rules.explain import explain as run_explain
    cfg = services.settings
    def run(store):
        try:
            rules = load_rules(store, None, cfg.rules_dir or None)
            return run_explain(store, cfg, rules, target, services.clock(), roll=False)
        except RuleError as exc:
            raise HTTPException(500, f"the rules do not load: {exc}") from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    return services.read(run)


@router.get("/findings")
def findings(services: ServicesDep, who: ViewerKey, limit: Annotated[int, Query(ge=1, le=5000)] = 200,
             rule: str | None = None) -> list[dict]:
    """What the rules found, one row per episode (``now``: first found, ``last_seen`` and
    ``passes``: how long it went on), most recently seen first (tags and simulated rules too)."""
    def run(store):
        return store.records("""select now, last_seen, passes, rule, entity_kind, entity, action, simulated, reason
                                from findings where $rule is null or rule = $rule
                                order by last_seen desc, rule limit $limit""", {"rule": rule, "limit": limit})
    return services.read(run)


@router.get("/decisions")
def decisions(services: ServicesDep, who: ViewerKey, active: bool = False, held: bool = False,
              rule: str | None = None, scope: Literal["ip", "range", "asn", "user"] | None = None,
              value: str | None = None, effect: Literal["ban", "throttle", "boost"] | None = None,
              origin: str | None = None, limit: Annotated[int, Query(ge=1, le=100000)] = 500) -> list[dict]:
    """Decisions, newest change first; `held` is the circuit breaker's reason for keeping one out
    of force (null: applied). active: only those in force; held: only those waiting for an admin.
    The other filters narrow by rule, scope, value, effect and origin (rule, manual)."""
    if active and held:
        raise HTTPException(422, "active and held exclude each other: a held decision is not in force")
    cond = ("revoked_at is null and until > $now and created_at <= $now and not simulated and held is null"
            if active else "revoked_at is null and until > $now and held is not null" if held else "$now is not null")
    def run(store):
        return store.records(f"""
            select id, seq, scope, value, effect, tier, rule, origin, reason, created_at, until,
                   revoked_at, simulated, held from decisions
            where {cond} and ($rule is null or rule = $rule) and ($scope is null or scope = $scope)
              and ($value is null or value = $value) and ($effect is null or effect = $effect)
              and ($origin is null or origin = $origin)
            order by seq desc limit $limit""",
            {"now": services.clock(), "rule": rule, "scope": scope, "value": value, "effect": effect,
             "origin": origin, "limit": limit})
    return services.read(run)


@router.get("/rules")
def rules(services: ServicesDep, who: ViewerKey, start: When = None, end: When = None) -> list[dict]:
    """Every rule loaded, with its hits over the range (default: the last 7 days of traffic) and
    its decisions in force now."""
    from rules.engine import RuleError, load_rules
    cfg = services.settings
    def run(store):
        s = _span(store, services, start, end)
        try:
            return load_rules(store, None, cfg.rules_dir or None), queries.rule_hits(store, s, services.clock())
        except RuleError as exc:
            raise HTTPException(500, f"the rules do not load: {exc}") from None
    loaded, hits = services.read(run)
    zero = {"findings": 0, "entities": 0, "decisions": 0, "active": 0}
    return [{"rule": r.name, "pack": r.pack, "entity": r.entity, "window": r.window, "action": r.action,
             "simulated": r.simulate, "where": r.where, "description": r.description,
             **hits.get(r.name, zero)} for r in sorted(loaded, key=lambda r: (r.pack, r.name))]


@router.get("/backtest")
def backtest(services: ServicesDep, who: ViewerKey, start: When = None, end: When = None) -> dict:
    """Replay every shipped pack (and the site folder) hour by hour over the range (at most 7
    days; default the last 24 hours of traffic): per rule the entities flagged and the bytes a
    ban would have saved. Live decisions are not touched."""
    from rules.backtest import backtest as run_backtest
    from rules.engine import load_rules
    cfg = services.settings

    def piece(fn):
        # each hour of the replay is a read of its own, with a detection pass's memory (the
        # same feature queries): a checkpoint or another reader waits for one piece, and at
        # serve_memory_mb alone the demo month's backtest ran out of memory (500)
        def run(store):
            with services.memory.at_least(store, cfg.detect_memory_mb):
                return fn(store)
        return services.read(run)
    s, rules = services.read(lambda store: (_span(store, services, start, end, days=1, longest=7),
                                            load_rules(store, None, cfg.rules_dir or None)))
    return run_backtest(None, cfg, rules, s.start, s.end, roll=False, piece=piece)


def _lists(store) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"allowed": [], "unlimited": [], "blocked": []}
    for r in store.records("select list, pattern, reason, added_at from image_lists order by list, pattern"):
        out.setdefault(r.pop("list"), []).append(r)
    return out


@router.get("/images")
def images(services: ServicesDep, who: ViewerKey) -> dict:
    """The three image lists with their reasons."""
    def run(store):
        return _lists(store)
    return services.read(run)


def _refusal(image: str, lists: dict) -> tuple[dict, str, str]:
    """Which pattern of each list matches, the verdict and why: the order of /v1/check."""
    hit = {name: next((e["pattern"] for e in lists[name] if matches(e["pattern"], image)), None)
           for name in ("allowed", "unlimited", "blocked")}
    if hit["blocked"]:
        return hit, "refused", f"blocked by {hit['blocked']}"
    if lists["allowed"] and not hit["allowed"]:
        return hit, "refused", "not on the allow list"
    if hit["unlimited"]:
        return hit, "unlimited", f"on the unlimited list by {hit['unlimited']}"
    return hit, "allowed", f"allowed by {hit['allowed']}" if hit["allowed"] else "there is no allow list"


@router.get("/images/match")
def image_match(services: ServicesDep, who: ViewerKey, image: Annotated[str, Query(min_length=1, max_length=300)]) -> dict:
    """Does this image match the lists, and by which pattern? The verdict /v1/check gives."""
    try:
        name = image_name(image.strip(), services.settings.default_registry)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    hit, verdict, why = _refusal(name, services.read(_lists))
    return {"image": name, **hit, "verdict": verdict, "why": why}


@router.get("/demand")
def demand(services: ServicesDep, who: ViewerKey, start: When = None, end: When = None, limit: Limit = 50) -> list[dict]:
    """Images asked for that the lists refuse, most wanted first (by distinct addresses): what
    users otherwise file issues for by hand."""
    def run(store):
        s = _span(store, services, start, end, days=30)
        lists = _lists(store)
        if not lists["allowed"] and not lists["blocked"]:
            return []
        out = []
        for r in queries.image_requests(store, s, 100_000):
            _, verdict, why = _refusal(r["image"], lists)
            if verdict == "refused":
                out.append({"image": r["image"], "requests": r["requests"], "addresses": r["addresses"],
                            "refused": why})
                if len(out) >= limit:
                    break
        return out
    return services.read(run)


@router.get("/tiers")
def tiers(services: ServicesDep, who: ViewerKey) -> dict:
    """The tiers as stored (`tiers list --json`), and which one anonymous and authenticated
    clients get (``default``, as the published policy says)."""
    out = services.read(queries.tier_table)
    return {**out, "default": services.publisher.current.content["default_tiers"]}

"""What the operator looks at: traffic over time, top talkers, one entity's profile.

Every figure comes from the hourly roll-ups (facts_hourly, blob_hourly), never from raw
events: a month of a busy mirror is tens of millions of events but a few million roll-up rows,
and the dashboard must answer within a couple of seconds. Times are UTC hours (event time).
Distinct addresses are counted by their 64-bit hash: 0.52 s instead of 0.83 s for 30 days of
daily counts over 30 M events (3.7 M roll-up rows), and two of a month's ~10^5 addresses share
a hash with a chance of about 10^-9.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core import countries

TOP_KINDS = ("address", "prefix", "asn", "country", "family", "image", "user", "user_agent")

# SQL for the entity a facts_hourly row (alias f) belongs to, and a label beside it.
# i: ip_info, p: ip_prefix, u: user_agents (joined only when the key needs them)
_KEY = {
    "address": ("f.client_ip", "f.client_ip"),
    "prefix": ("p.prefix", "p.prefix"),
    "asn": ("cast(i.asn as varchar)", "'AS' || cast(i.asn as varchar) || coalesce(' ' || any_value(i.as_org), '')"),
    "country": ("i.country", "i.country"),
    "family": ("coalesce(u.family, 'unknown')", "coalesce(u.family, 'unknown')"),
    "image": ("f.registry || '/' || f.repository", "f.registry || '/' || f.repository"),
    "user": ("f.remote_user", "f.remote_user"),
    "user_agent": ("coalesce(f.user_agent, '(none)')", "coalesce(f.user_agent, '(none)')"),
}


@dataclass(frozen=True)
class Span:
    """A half-open range of hours [start, end)."""
    start: datetime
    end: datetime

    @property
    def previous(self) -> "Span":
        return Span(self.start - (self.end - self.start), self.start)


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def parse_when(text: str | None) -> datetime | None:
    """An ISO date or time (UTC unless it has an offset); a date is its midnight."""
    if not text:
        return None
    from core.clock import parse_time
    text = text.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time())
    return parse_time(text)


def latest_hour(store) -> datetime | None:
    return store.value("select max(hour) from facts_hourly")


def span(store, start: datetime | None, end: datetime | None, now: datetime, days: int = 7) -> Span:
    """The range asked for; by default the ``days`` up to the newest hour with traffic (so a
    replay of old logs shows its data, and a live mirror its last days)."""
    if end is None:
        latest = latest_hour(store)
        end = (latest + timedelta(hours=1)) if latest else _hour(now) + timedelta(hours=1)
    if start is None:
        start = end - timedelta(days=days)
    if start >= end:
        raise ValueError(f"start {start} is not before end {end}")
    if end - start > timedelta(days=400):
        raise ValueError("a range may span at most 400 days")
    return Span(start, end)


@dataclass
class Filters:
    """The filters log dashboards are asked for most. Each narrows facts_hourly (alias f)."""
    registry: str | None = None
    asn: int | None = None
    country: str | None = None
    family: str | None = None
    image: str | None = None          # registry/repository
    address: str | None = None        # an address or a CIDR

    def sql(self, store) -> tuple[str, dict]:
        conds, p = [], {}
        if self.registry:
            conds.append("f.registry = $registry")
            p["registry"] = self.registry
        if self.image:
            registry, _, repository = self.image.partition("/")
            conds.append("f.registry = $img_registry and f.repository = $img_repository")
            p.update(img_registry=registry, img_repository=repository)
        if self.asn is not None:
            conds.append("f.client_ip in (select ip from ip_info where asn = $asn)")
            p["asn"] = self.asn
        if self.country:
            conds.append("f.client_ip in (select ip from ip_info where country = $country)")
            p["country"] = self.country.upper()
        if self.family:
            conds.append("f.user_agent in (select user_agent from user_agents where family = $family)")
            p["family"] = self.family
        if self.address:
            conds.append("f.client_ip in (select unnest($ips))")
            p["ips"] = addresses_in(store, self.address)
        return "".join(f" and {c}" for c in conds), p


def addresses_in(store, text: str) -> list[str]:
    """The client addresses seen that an address or CIDR covers (a /24 or /64 straight from
    ip_prefix; other widths by walking the addresses seen, a few hundred thousand at most)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is neither an address nor a range") from None
    if net.num_addresses == 1:
        return [str(net.network_address)]
    if net.prefixlen == (24 if net.version == 4 else 64):
        return [ip for (ip,) in store.execute("select ip from ip_prefix where prefix = ?", [str(net)])]
    out = []
    for (ip,) in store.execute("select ip from ip_prefix"):
        a = ipaddress.ip_address(ip)
        if a.version == net.version and a in net:
            out.append(ip)
    return out


TIB = 1 << 40


def daily_totals(store, start: datetime | None = None, end: datetime | None = None) -> dict:
    """Requests, bytes and unique addresses per day and registry, over whole hours of the
    roll-up: what `pullwarden stats` prints. The roll-up, not the events: it is where a
    redirected blob's object-store bytes are joined to the client that asked, and it outlives
    the raw events (keep_events_days). ``object_bytes`` came from object-storage logs: of
    them ``exact_bytes`` were joined by the signed URL's referer or the downloader's own 307,
    ``timed_bytes`` by blob and time alone (an estimate), ``unjoined_bytes`` to no request.
    ``store_calls``: the stores' requests that were no client's download (the mirror's own
    ListObjects, PUTs, …), never counted as requests or bytes."""
    rows = store.execute("""
        select cast(hour as date) as day, registry, grouping(cast(hour as date)) as g_day, grouping(registry) as g_reg,
               sum(requests)::bigint, sum(bytes)::bigint, count(distinct client_ip),
               sum(object_bytes)::bigint, sum(unjoined_bytes)::bigint, sum(exact_bytes)::bigint,
               sum(timed_bytes)::bigint
        from facts_hourly where ($start is null or hour >= $start) and ($end is null or hour < $end)
        group by grouping sets ((cast(hour as date), registry), (cast(hour as date)), ())
        order by day nulls first, g_reg desc, registry nulls first""", {"start": start, "end": end})
    out = {"start": start, "end": end, "requests": 0, "bytes": 0, "tib": 0.0, "unique_ips": 0,
           "object_bytes": 0, "unjoined_bytes": 0, "exact_bytes": 0, "timed_bytes": 0, "object_share": 0.0,
           "days": []}
    for day, registry, g_day, g_reg, requests, nbytes, ips, obj, unjoined, exact, timed in rows:
        if requests is None:            # the grand total of no rows
            continue
        entry = {"requests": requests, "bytes": nbytes, "tib": round(nbytes / TIB, 6), "unique_ips": ips,
                 "object_bytes": obj, "unjoined_bytes": unjoined, "exact_bytes": exact, "timed_bytes": timed,
                 "object_share": round(obj / nbytes, 6) if nbytes else 0.0}
        if g_day:
            out.update(entry)
        elif g_reg:
            out["days"].append({"day": day.isoformat(), **entry, "registries": []})
        else:
            out["days"][-1]["registries"].append({"registry": registry, **entry})
    calls, call_bytes = store.execute("""
        select coalesce(sum(calls), 0)::bigint, coalesce(sum(bytes), 0)::bigint from store_calls_hourly
        where ($start is null or hour >= $start) and ($end is null or hour < $end)""", {"start": start, "end": end})[0]
    out.update(store_calls=calls, store_call_bytes=call_bytes)
    return out


def overview(store, now: datetime, days: int = 30) -> dict:
    """The first page: today, the last ``days`` days per registry, what is in force, freshness.
    Of the object-storage bytes (``object_bytes``), as in daily_totals: ``exact_bytes`` joined
    to their client by the signed URL's referer or its own 307, ``timed_bytes`` by blob and
    time alone (an estimate), ``unjoined_bytes`` to no request."""
    latest_event = store.value("select max(ts) from events")
    latest = latest_hour(store)
    today = (min(now, latest_event) if latest_event else now).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    daily = store.records("""
        select cast(hour as date) as day, coalesce(registry, '(none)') as registry,
               sum(bytes)::bigint as bytes, sum(requests)::bigint as requests
        from facts_hourly where hour >= $since group by all order by day, registry""", {"since": since})
    totals = store.records("""
        select cast(hour as date) as day, sum(bytes)::bigint as bytes, sum(requests)::bigint as requests,
               count(distinct hash(client_ip)) as addresses, sum(object_bytes)::bigint as object_bytes,
               sum(unjoined_bytes)::bigint as unjoined_bytes, sum(exact_bytes)::bigint as exact_bytes,
               sum(timed_bytes)::bigint as timed_bytes
        from facts_hourly where hour >= $since group by all order by day""", {"since": since})
    t = next((r for r in totals if r["day"] == today.date()), None)
    split = ("object_bytes", "unjoined_bytes", "exact_bytes", "timed_bytes")
    counts = dict(store.execute("""
        select case when held is not null then 'held' else effect end, count(*) from decisions
        where revoked_at is null and until > $now and created_at <= $now and not simulated group by all""",
                                {"now": now}))
    return {"now": now, "latest_event": latest_event, "latest_hour": latest,
            "ingest_lag_seconds": (now - latest_event).total_seconds() if latest_event else None,
            "today": {"day": today.date(), "bytes": int(t["bytes"]) if t else 0,
                      "requests": int(t["requests"]) if t else 0, "addresses": int(t["addresses"]) if t else 0,
                      **{k: int(t[k] or 0) if t else 0 for k in split}},
            "bytes": sum(int(r["bytes"]) for r in totals),
            **{k: sum(int(r[k] or 0) for r in totals) for k in split},
            "daily": daily, "daily_totals": totals,
            "in_force": {"bans": counts.get("ban", 0), "throttles": counts.get("throttle", 0),
                         "boosts": counts.get("boost", 0), "held": counts.get("held", 0)}}


def traffic(store, s: Span, bucket: str, filters: Filters) -> dict:
    """Requests, bytes, addresses and pulls per hour or day over ``s``, and over the period
    before it (same length) for comparison; ``t`` of the previous series is its own time."""
    if bucket not in ("hour", "day"):
        raise ValueError("bucket is hour or day")
    where, p = filters.sql(store)

    def series(period: Span) -> list[dict]:
        return store.records(f"""
            select date_trunc('{bucket}', f.hour) as t, sum(f.requests)::bigint as requests,
                   sum(f.bytes)::bigint as bytes, count(distinct hash(f.client_ip)) as addresses,
                   sum(f.manifest_gets)::bigint as pulls
            from facts_hourly f where f.hour >= $start and f.hour < $end {where}
            group by all order by t""", {**p, "start": period.start, "end": period.end})

    def totals(period: Span) -> dict:
        return store.records(f"""
            select coalesce(sum(f.requests), 0)::bigint as requests, coalesce(sum(f.bytes), 0)::bigint as bytes,
                   count(distinct hash(f.client_ip)) as addresses, coalesce(sum(f.manifest_gets), 0)::bigint as pulls,
                   coalesce(sum(f.object_bytes), 0)::bigint as object_bytes,
                   coalesce(sum(f.unjoined_bytes), 0)::bigint as unjoined_bytes
            from facts_hourly f where f.hour >= $start and f.hour < $end {where}""",
                             {**p, "start": period.start, "end": period.end})[0]
    return {"bucket": bucket, "start": s.start, "end": s.end, "series": series(s), "previous": series(s.previous),
            "totals": totals(s), "previous_totals": totals(s.previous)}


def _joins(by: str) -> str:
    return {"prefix": "join ip_prefix p on p.ip = f.client_ip",
            "asn": "join ip_info i on i.ip = f.client_ip", "country": "join ip_info i on i.ip = f.client_ip",
            "family": "left join user_agents u on u.user_agent = f.user_agent"}.get(by, "")


def top(store, by: str, s: Span, limit: int, filters: Filters | None = None) -> dict:
    """The biggest consumers by ``by`` over ``s``: bytes, share of all bytes, requests, pulls,
    distinct addresses, bytes per address (the fair share that tells a NAT of many modest
    hosts from one heavy host) and the repeat ratio (blob downloads per distinct blob: 1 is
    each blob once; a CI job without a layer cache, or a reseller, shows tens)."""
    if by not in _KEY:
        raise ValueError(f"by is one of {', '.join(TOP_KINDS)}")
    key, label = _KEY[by]
    where, p = (filters or Filters()).sql(store)
    p.update(start=s.start, end=s.end)
    total = int(store.value(f"""select coalesce(sum(f.bytes), 0) from facts_hourly f
                                where f.hour >= $start and f.hour < $end {where}""", p))
    p["limit"] = limit
    rows = store.records(f"""
        select {key} as entity, {label} as label, sum(f.bytes)::bigint as bytes, sum(f.requests)::bigint as requests,
               sum(f.manifest_gets)::bigint as pulls, count(distinct hash(f.client_ip)) as addresses
        from facts_hourly f {_joins(by)}
        where f.hour >= $start and f.hour < $end and {key} is not null {where}
        group by {key} order by bytes desc, entity limit $limit""", p)
    repeat = _repeat_ratios(store, by, s, [r["entity"] for r in rows])
    for r in rows:
        if by == "country":
            r["label"] = countries.label(r["entity"])       # "Germany (DE)": a label is for people
        r["share"] = r["bytes"] / total if total else 0.0
        r["bytes_per_address"] = r["bytes"] // r["addresses"] if r["addresses"] else 0
        r["repeat_ratio"] = repeat.get(r["entity"])
    return {"by": by, "start": s.start, "end": s.end, "total_bytes": total, "rows": rows}


def _repeat_ratios(store, by: str, s: Span, entities: list[str]) -> dict[str, float]:
    """Blob downloads ÷ distinct blobs for the given entities (blob_hourly has no user agent or
    image, so those kinds have none)."""
    if not entities or by in ("family", "image", "user_agent"):
        return {}
    key = {"address": "b.client_ip", "prefix": "p.prefix", "asn": "cast(i.asn as varchar)",
           "country": "i.country", "user": "b.remote_user"}[by]
    join = {"prefix": "join ip_prefix p on p.ip = b.client_ip", "asn": "join ip_info i on i.ip = b.client_ip",
            "country": "join ip_info i on i.ip = b.client_ip"}.get(by, "")
    rows = store.execute(f"""
        select {key}, sum(b.downloads) / count(distinct b.blob) from blob_hourly b {join}
        where b.hour >= $start and b.hour < $end and {key} in (select unnest($entities)) group by 1""",
                         {"start": s.start, "end": s.end, "entities": entities})
    return {k: round(float(v), 2) for k, v in rows}


ENTITY_KINDS = ("address", "prefix", "asn", "user")


def who(kind: str) -> str:
    """SQL condition on facts_hourly (alias f) for one entity, its value bound as $v."""
    return {"address": "f.client_ip = $v", "prefix": "f.client_ip in (select ip from ip_prefix where prefix = $v)",
            "asn": "f.client_ip in (select ip from ip_info where cast(asn as varchar) = $v)",
            "user": "f.remote_user = $v"}[kind]


def canonical_entity(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "address":
        return str(ipaddress.ip_address(value))
    if kind == "prefix":
        net = ipaddress.ip_network(value, strict=False)
        if net.prefixlen != (24 if net.version == 4 else 64):
            raise ValueError(f"{value}: a prefix is a /24 (IPv4) or a /64 (IPv6)")
        return str(net)
    if kind == "asn":
        return value.upper().removeprefix("AS")
    return value


def entity(store, kind: str, value: str, now: datetime) -> dict:
    """One address, prefix, ASN or user: where it is, its hourly profile over 7 days, its images
    and clients, and every decision ever made about it."""
    if kind not in ENTITY_KINDS:
        raise ValueError(f"kind is one of {', '.join(ENTITY_KINDS)}")
    try:
        value = canonical_entity(kind, value)
    except ValueError as e:
        raise ValueError(str(e)) from None
    latest = latest_hour(store) or _hour(now)
    s = Span(latest + timedelta(hours=1) - timedelta(days=7), latest + timedelta(hours=1))
    p = {"v": value, "start": s.start, "end": s.end}
    cond = who(kind)
    hourly = store.records(f"""
        select f.hour, sum(f.requests)::bigint as requests, sum(f.bytes)::bigint as bytes
        from facts_hourly f where f.hour >= $start and f.hour < $end and {cond} group by all order by f.hour""", p)
    images = store.records(f"""
        select f.registry || '/' || f.repository as image, sum(f.requests)::bigint as requests,
               sum(f.bytes)::bigint as bytes, sum(f.manifest_gets)::bigint as pulls
        from facts_hourly f where f.hour >= $start and f.hour < $end and {cond} and f.repository is not null
        group by all order by bytes desc, image limit 20""", p)
    agents = store.records(f"""
        select coalesce(f.user_agent, '(none)') as user_agent, any_value(u.family) as family,
               sum(f.requests)::bigint as requests
        from facts_hourly f left join user_agents u on u.user_agent = f.user_agent
        where f.hour >= $start and f.hour < $end and {cond} group by all order by requests desc limit 20""", p)
    totals = store.records(f"""
        select coalesce(sum(f.bytes), 0)::bigint as bytes, coalesce(sum(f.requests), 0)::bigint as requests,
               count(distinct hash(f.client_ip)) as addresses
        from facts_hourly f where f.hour >= $start and f.hour < $end and {cond}""", p)[0]
    where = store.records(f"""
        select i.asn, any_value(i.as_org) as as_org, any_value(i.country) as country, count(*) as n
        from facts_hourly f join ip_info i on i.ip = f.client_ip
        where f.hour >= $start and f.hour < $end and {cond} group by i.asn order by n desc limit 1""", p)
    return {"kind": kind, "value": value, "start": s.start, "end": s.end,
            "asn": where[0]["asn"] if where else None, "as_org": where[0]["as_org"] if where else None,
            "country": where[0]["country"] if where else None,
            "hourly": hourly, "images": images, "user_agents": agents, "totals": totals,
            "decisions": decisions_about(store, kind, value, where[0]["asn"] if where else None),
            "allowlisted": allowlisted(store, kind, value, now)}


def decisions_about(store, kind: str, value: str, asn: int | None) -> list[dict]:
    """Every decision on the entity itself, and those that cover it: the ranges an address or
    prefix lies in, its ASN."""
    rows = store.records("""select id, scope, value, effect, tier, rule, origin, reason, created_at, until,
                                   revoked_at, simulated, held from decisions
                            where scope = 'range' or (scope = $scope and value = $v) or (scope = 'asn' and value = $asn)
                            order by created_at desc""",
                         {"scope": {"address": "ip", "prefix": "range", "asn": "asn", "user": "user"}[kind],
                          "v": value, "asn": str(asn) if asn is not None and kind in ("address", "prefix") else None})
    if kind not in ("address", "prefix"):
        return [r for r in rows if r["scope"] != "range" or r["value"] == value]
    target = ipaddress.ip_network(value, strict=False)
    out = []
    for r in rows:
        if r["scope"] == "range":
            try:
                net = ipaddress.ip_network(r["value"], strict=False)
            except ValueError:
                continue
            if net.version != target.version or not target.subnet_of(net):
                continue
        out.append(r)
    return out


def allowlisted(store, kind: str, value: str, now: datetime) -> dict | None:
    """The allowlist entry in force that covers the entity, if any."""
    rows = store.records("""select kind, value, reason, created_at, until from allowlist
                            where until is null or until > ?""", [now])
    target = None
    if kind in ("address", "prefix"):
        target = ipaddress.ip_network(value, strict=False)
    for r in rows:
        if target is not None and r["kind"] in ("ip", "cidr"):
            try:
                net = ipaddress.ip_network(r["value"], strict=False)
            except ValueError:
                continue
            if net.version == target.version and target.subnet_of(net):
                return r
        if (kind, r["kind"]) in (("asn", "asn"), ("user", "user")) and r["value"] == value:
            return r
    return None


def image_requests(store, s: Span, limit: int) -> list[dict]:
    """Requests and distinct addresses per image over ``s`` (for demand for refused images)."""
    return store.records("""
        select f.registry || '/' || f.repository as image, sum(f.requests)::bigint as requests,
               count(distinct hash(f.client_ip)) as addresses, sum(f.s403)::bigint as refused_403
        from facts_hourly f where f.hour >= $start and f.hour < $end and f.repository is not null
        group by all order by addresses desc, requests desc, image limit $limit""",
                         {"start": s.start, "end": s.end, "limit": limit})


def rule_hits(store, s: Span, now: datetime) -> dict[str, dict]:
    """Per rule, over ``s`` (by detection time): findings, distinct entities found, decisions
    made; and its decisions in force now."""
    found = {r["rule"]: r for r in store.records("""
        select rule, count(*) as findings, count(distinct entity) as entities from findings
        where now >= $start and now < $end group by rule""", {"start": s.start, "end": s.end})}
    made = dict(store.execute("""select rule, count(*) from decisions where rule is not null
                                 and created_at >= $start and created_at < $end group by rule""",
                              {"start": s.start, "end": s.end}))
    active = dict(store.execute("""select rule, count(*) from decisions where rule is not null and revoked_at is null
                                   and held is null and not simulated and until > $now and created_at <= $now
                                   group by rule""", {"now": now}))
    rules = set(found) | set(made) | set(active)
    return {r: {"findings": found.get(r, {}).get("findings", 0), "entities": found.get(r, {}).get("entities", 0),
                "decisions": made.get(r, 0), "active": active.get(r, 0)} for r in rules}


TIER_COLUMNS = ["name", "requests_per_minute", "burst", "concurrent", "blob_bytes_per_second", "window_bytes",
                "window_seconds"]


def tier_table(store) -> dict:
    """The tiers as stored, and which one anonymous and logged-in clients get."""
    return {"tiers": store.records(f"select {', '.join(TIER_COLUMNS)} from tiers order by name"),
            "defaults": dict(store.execute("select key, value from kv where key like '%_tier'"))}

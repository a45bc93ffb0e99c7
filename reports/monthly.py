"""The monthly TiB budget report: its figures, from the hourly roll-up.

One month in ``report_timezone`` (its first to its last local midnight). Every byte figure is
an int of bytes; TiB = 2^40 bytes. For a month in progress the figures run to the end of the
newest rolled-up hour and carry the projection (``partial``); a closed month's figures are
those of the whole month, and its report is frozen (reports/archive.py).

Comparisons: with the month before (whole), and with the same point of the month before (as
long a stretch from its start as this month has had; a closed month: the whole month before).
Movers are the entities whose bytes changed most against that stretch; a change within 5% of
what they were (``FLAT``) is flat.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from core import countries
from reports import budget as budget_mod
from reports.cost import cost

FLAT = 0.05            # a change within ±5% is flat
TOP = 20               # rows of each breakdown, and the top consumers
MOVERS = 10
IMPACT_DAYS = 7        # a decision's impact: bytes a day in the 7 days before it and after it
IMPACT_ROWS = 50
CLOSE_GRACE = timedelta(hours=1)       # a month is closed an hour after its end: late lines land first

# The breakdowns read small tables made once per report from the roll-up (one scan of the month,
# one of the stretch of the month before): bytes per address and image (_ipimg), and per address
# with its AS number and country (_ip). A breakdown is then a group-by over a few hundred thousand
# rows, with exact address counts, instead of a pass over millions of hourly rows joined with
# ip_info each time (30 M events: 12 s -> a few).
SCRATCH = ("_pw_ipimg", "_pw_ip", "_pw_prev_img", "_pw_prev_ip")

BREAKDOWNS = {
    # name: (table, key, label, addresses)
    "registry": ("_pw_ipimg", "coalesce(registry, '(none)')", None, "count(distinct hash(client_ip))"),
    "image": ("_pw_ipimg", "coalesce(registry, '(none)') || '/' || coalesce(repository, '(none)')", None, "count(*)"),
    "asn": ("_pw_ip", "coalesce(cast(asn as varchar), 'unknown')",
            # min(), not any_value(): an AS number whose addresses carry different names must get the
            # same label on every run (the report's bytes, and its inputs' hash, depend on it)
            "coalesce('AS' || cast(min(asn) as varchar) || coalesce(' ' || min(as_org), ''), 'unknown')",
            "count(*)"),
    "country": ("_pw_ip", "coalesce(country, 'unknown')", None, "count(*)"),
    # straight from the roll-up: a handful of families count their addresses faster than a table
    # of address x user agent is made
    "family": ("""(select f.client_ip, u.family, f.bytes as b, f.requests as r from facts_hourly f
                   left join user_agents u on u.user_agent = f.user_agent where f.hour >= $lo and f.hour < $hi)""",
               "coalesce(family, 'unknown')", None, "count(distinct hash(client_ip))"),
    "address": ("_pw_ip", "client_ip", None, "count(*)"),
}


def _scratch(store, lo: datetime, hi: datetime, plo: datetime, phi: datetime) -> None:
    store.execute("""create or replace temp table _pw_ipimg as
        select client_ip, registry, repository, sum(bytes)::hugeint as b, sum(requests)::hugeint as r,
            sum(exact_bytes)::hugeint as xb, sum(timed_bytes)::hugeint as tb, sum(unjoined_bytes)::hugeint as ub
        from facts_hourly where hour >= $lo and hour < $hi group by all""", {"lo": lo, "hi": hi})
    store.execute("""create or replace temp table _pw_ip as
        select x.client_ip, i.asn, i.as_org, i.country, x.b, x.r, x.images, x.xb, x.tb, x.ub
        from (select client_ip, sum(b) as b, sum(r) as r, count(*) as images, sum(xb) as xb, sum(tb) as tb,
                     sum(ub) as ub from _pw_ipimg group by 1) x
        left join ip_info i on i.ip = x.client_ip""")
    # the stretch of the month before, for the movers only: by image and by address (a group-by of
    # a few thousand images and one of the addresses is cheaper than one of address x image)
    p = {"lo": plo, "hi": phi}
    store.execute("""create or replace temp table _pw_prev_img as
        select registry, repository, sum(bytes)::hugeint as b from facts_hourly
        where hour >= $lo and hour < $hi group by all""", p)
    store.execute("""create or replace temp table _pw_prev_ip as
        select x.client_ip, i.asn, x.b
        from (select client_ip, sum(bytes)::hugeint as b from facts_hourly where hour >= $lo and hour < $hi
              group by 1) x left join ip_info i on i.ip = x.client_ip""", p)


def _drop_scratch(store) -> None:
    for t in SCRATCH:
        store.execute(f"drop table if exists {t}")


def closed(month: str, tz_name: str, now: datetime) -> bool:
    _, end = budget_mod.month_bounds(month, budget_mod.zone(tz_name))
    return now >= end + CLOSE_GRACE


def _breakdown(store, name: str, total: int, span: tuple, limit: int = TOP) -> list[dict]:
    table, key, label, addresses = BREAKDOWNS[name]
    sql = f"""
        select {key} as k, {label or key} as label, sum(b)::hugeint as bytes, sum(r)::hugeint, {addresses}
        from {table} group by 1 order by bytes desc, k limit $n"""
    rows = store.execute(sql, {"n": limit, **({"lo": span[0], "hi": span[1]} if "$lo" in sql else {})})
    if name == "country":       # the code stays the key; people read the name
        rows = [(k, countries.label(k), *rest) for k, _, *rest in rows]
    return [{"key": k, "label": lab, "bytes": int(b or 0), "requests": int(r or 0), "addresses": a,
             "share": round(int(b or 0) / total, 6) if total else 0.0} for k, lab, b, r, a in rows]


def _consumers(store, total: int) -> list[dict]:
    """The top addresses; of their object-storage bytes (a redirect-mode mirror), how sure each
    is: joined by referer or their own 307 (exact), by blob and time alone, or not joined."""
    rows = store.execute("""select client_ip, asn, as_org, country, b, r, images, xb, tb, ub from _pw_ip
                            order by b desc, client_ip limit $n""", {"n": TOP})
    return [{"address": ip, "asn": asn, "as_org": org, "country": cc, "bytes": int(b or 0), "requests": int(r),
             "images": n, "share": round(int(b or 0) / total, 6) if total else 0.0,
             "exact_bytes": int(xb or 0), "timed_bytes": int(tb or 0), "unjoined_bytes": int(ub or 0)}
            for ip, asn, org, cc, b, r, n, xb, tb, ub in rows]


def _hour_days(lo: datetime, hi: datetime, tz: str) -> tuple[list, list]:
    """Each hour of [lo, hi) and the local day it begins in: joined, instead of converting the
    time zone of every roll-up row."""
    from datetime import timezone
    from zoneinfo import ZoneInfo
    zone, hours, days, t = ZoneInfo(tz), [], [], lo
    while t < hi:
        hours.append(t)
        days.append(t.replace(tzinfo=timezone.utc).astimezone(zone).date())
        t += timedelta(hours=1)
    return hours, days


def _daily(store, lo: datetime, hi: datetime, tz: str) -> list[dict]:
    hours, local_days = _hour_days(lo, hi, tz)
    p = {"h": hours, "d": local_days}
    hour_day = "(select unnest($h::timestamp[]) as hour, unnest($d::date[]) as day)"
    rows = store.execute(f"""
        select d.day, coalesce(x.registry, '(none)'), sum(x.b)::hugeint, sum(x.r)::hugeint
        from (select hour, registry, sum(bytes) as b, sum(requests) as r from facts_hourly
              where hour >= $lo and hour < $hi group by all) x join {hour_day} d using (hour)
        group by 1, 2 order by 1, 2""", {**p, "lo": lo, "hi": hi})
    addresses = dict(store.execute(f"""
        select d.day, count(distinct hash(f.client_ip)) from facts_hourly f join {hour_day} d using (hour)
        where f.hour >= $lo and f.hour < $hi group by 1""", {**p, "lo": lo, "hi": hi}))
    days: dict[date, dict] = {}
    for d, reg, b, r in rows:
        day = days.setdefault(d, {"day": d.isoformat(), "bytes": 0, "requests": 0,
                                  "addresses": addresses.get(d, 0), "registries": {}})
        day["bytes"] += int(b or 0)
        day["requests"] += int(r or 0)
        day["registries"][reg] = int(b or 0)
    return [days[d] for d in sorted(days)]


def _tiers(store, lo: datetime, hi: datetime, total: int) -> list[dict]:
    """Bytes by the tier they were served in: a ban or a tier assignment (address, user or AS
    number) in force in that hour, else the default tier of anonymous or authenticated pulls.
    Approximate: range decisions are not matched, and an allowlisted address counts in its
    default tier."""
    anon = store.value("select value from kv where key = 'anonymous_tier'") or "anonymous"
    auth = store.value("select value from kv where key = 'authenticated_tier'") or "authenticated"
    if not store.value("""select count(*) from decisions where not simulated and held is null
                          and scope in ('ip', 'user', 'asn') and created_at < $hi
                          and least(coalesce(revoked_at, until), until) > $lo""", {"lo": lo, "hi": hi}):
        rows = store.execute("""
            select case when remote_user is null then $anon else $auth end as tier, sum(bytes)::hugeint as b,
                   sum(requests)::hugeint, count(distinct hash(client_ip))
            from facts_hourly where hour >= $lo and hour < $hi group by 1 order by b desc, tier""",
            {"lo": lo, "hi": hi, "anon": anon, "auth": auth})
        return [{"key": t, "label": t, "bytes": int(b or 0), "requests": int(r or 0), "addresses": a,
                 "share": round(int(b or 0) / total, 6) if total else 0.0} for t, b, r, a in rows]
    rows = store.execute("""
        with dec as (
            select scope, value, case when effect = 'ban' then ' banned' else tier end as label,
                   date_trunc('hour', created_at) as t0, least(coalesce(revoked_at, until), until) as t1
            from decisions
            where not simulated and held is null and scope in ('ip', 'user', 'asn')
              and created_at < $hi and least(coalesce(revoked_at, until), until) > $lo),
        f as (select f.hour, f.client_ip, f.remote_user, i.asn, f.bytes, f.requests
              from facts_hourly f left join ip_info i on i.ip = f.client_ip
              where f.hour >= $lo and f.hour < $hi),
        keys as (select distinct hour, client_ip, remote_user, asn from f),
        labelled as (
            select k.hour, k.client_ip, k.remote_user, min(d.label) as label      -- ' banned' sorts first
            from keys k join dec d
              on ((d.scope = 'ip' and d.value = k.client_ip) or (d.scope = 'user' and d.value = k.remote_user)
                  or (d.scope = 'asn' and d.value = cast(k.asn as varchar)))
             and k.hour >= d.t0 and k.hour < d.t1
            group by all)
        select coalesce(trim(l.label), case when f.remote_user is null then $anon else $auth end) as tier,
               sum(f.bytes)::hugeint as b, sum(f.requests)::hugeint, count(distinct hash(f.client_ip))
        from f left join labelled l
          on l.hour = f.hour and l.client_ip = f.client_ip and l.remote_user is not distinct from f.remote_user
        group by 1 order by b desc, tier""", {"lo": lo, "hi": hi, "anon": anon, "auth": auth})
    return [{"key": t, "label": t, "bytes": int(b or 0), "requests": int(r or 0), "addresses": a,
             "share": round(int(b or 0) / total, 6) if total else 0.0} for t, b, r, a in rows]


def _movers(store, name: str) -> list[dict]:
    table, key, _, _ = BREAKDOWNS[name]
    prev = {"_pw_ipimg": "_pw_prev_img", "_pw_ip": "_pw_prev_ip"}[table]
    rows = store.execute(f"""
        with cur as (select {key} as k, sum(b)::hugeint as b from {table} group by 1),
             prev as (select {key} as k, sum(b)::hugeint as b from {prev} group by 1)
        select coalesce(cur.k, prev.k) as k, coalesce(cur.b, 0) as now, coalesce(prev.b, 0) as before
        from cur full join prev on cur.k = prev.k
        order by abs(coalesce(cur.b, 0) - coalesce(prev.b, 0)) desc, k limit $n""", {"n": MOVERS})
    return [{"key": k, "bytes": int(n), "before": int(b), "change": int(n) - int(b),
             "change_share": round((int(n) - int(b)) / int(b), 6) if b else None, "trend": trend(int(n), int(b))}
            for k, n, b in rows]


def trend(now: int, before: int) -> str:
    if before == 0:
        return "flat" if now == 0 else "new"
    if now == 0:
        return "gone"
    change = (now - before) / before
    return "flat" if abs(change) <= FLAT else ("up" if change > 0 else "down")


def _impact(store, lo: datetime, hi: datetime, as_of: datetime) -> dict:
    """Decisions in force at some time in the month, with their entity's bytes a day in the
    IMPACT_DAYS before the decision and after it (to its end, the month's end or the data's)."""
    params = {"lo": lo, "hi": hi, "as_of": as_of, "days": IMPACT_DAYS, "n": IMPACT_ROWS}
    rows = store.execute("""
        with dec as (
            select id, scope, value, effect, tier, rule, origin, created_at,
                   least(coalesce(revoked_at, until), until) as ended, reason
            from decisions
            where not simulated and held is null and scope in ('ip', 'user', 'asn')
              and created_at < $hi and least(coalesce(revoked_at, until), until) > $lo),
        win as (select *, created_at - to_days($days) as b0,
                       least(created_at + to_days($days), ended, $as_of::timestamp) as a1 from dec),
        hits as (
            select w.id, f.hour, f.bytes from win w join facts_hourly f
              on w.scope = 'ip' and f.client_ip = w.value and f.hour >= w.b0 and f.hour < w.a1
            union all
            select w.id, f.hour, f.bytes from win w join facts_hourly f
              on w.scope = 'user' and f.remote_user = w.value and f.hour >= w.b0 and f.hour < w.a1
            union all
            select w.id, f.hour, f.bytes from win w join ip_info i on w.scope = 'asn' and cast(i.asn as varchar) = w.value
              join facts_hourly f on f.client_ip = i.ip and f.hour >= w.b0 and f.hour < w.a1)
        select w.id, w.scope, w.value, w.effect, w.tier, w.rule, w.origin, w.created_at, w.ended, w.reason,
               coalesce(sum(h.bytes) filter (where h.hour < date_trunc('hour', w.created_at)), 0)::hugeint as before,
               coalesce(sum(h.bytes) filter (where h.hour >= date_trunc('hour', w.created_at)), 0)::hugeint as after,
               greatest(epoch(w.a1 - w.created_at), 0) / 86400.0 as after_days
        from win w left join hits h on h.id = w.id
        group by all order by before desc, w.id limit $n""", params)
    count = store.value("""select count(*) from decisions where not simulated and held is null
                           and created_at < $hi and least(coalesce(revoked_at, until), until) > $lo""",
                        {"lo": lo, "hi": hi})
    out = []
    for i, scope, value, effect, tier, rule, origin, t0, t1, reason, b, a, after_days in rows:
        before_day = int(b) / IMPACT_DAYS
        after_day = int(a) / after_days if after_days > 0 else None
        out.append({"id": i, "scope": scope, "value": value, "effect": effect, "tier": tier, "rule": rule,
                    "origin": origin, "created_at": t0.isoformat(), "until": t1.isoformat(), "reason": reason,
                    "in_force_at_end": t1 > as_of, "bytes_before": int(b), "bytes_after": int(a),
                    "bytes_per_day_before": round(before_day), "days_after": round(after_days, 3),
                    "bytes_per_day_after": None if after_day is None else round(after_day),
                    "change_share": round((after_day - before_day) / before_day, 6)
                    if after_day is not None and before_day else None})
    return {"decisions": count, "shown": len(out), "days": IMPACT_DAYS, "rows": out}


def figures(store, month: str, tz_name: str, now: datetime, prices: list | None = None,
            currency: str = "USD") -> dict:
    """Every figure of the report of ``month``, as plain JSON values."""
    tz = budget_mod.zone(tz_name)
    start, end = budget_mod.month_bounds(month, tz)
    pmonth = budget_mod.previous_month(month)
    pstart, pend = budget_mod.month_bounds(pmonth, tz)
    status = budget_mod.status(store, tz_name, now, month)
    # a month in progress is compared with as long a stretch of the month before; a closed one
    # with the whole month before (months differ in length)
    same_point = min(pstart + (status["as_of"] - start), pend) if status["partial"] else pend
    _scratch(store, start, status["as_of"], pstart, same_point)
    try:
        return _figures(store, month, tz, status, start, end, pmonth, pstart, pend, same_point, prices, currency)
    finally:
        _drop_scratch(store)


def _figures(store, month, tz, status, start, end, pmonth, pstart, pend, same_point, prices, currency) -> dict:
    is_closed = not status["partial"]
    as_of = status["as_of"]
    total = status["used_bytes"]
    totals = store.execute("select coalesce(sum(r), 0)::hugeint, count(*) from _pw_ip")[0]
    prev_total = int(store.value("select coalesce(sum(bytes), 0)::hugeint from facts_hourly where hour >= ? and hour < ?",
                                 [pstart, pend]))
    prev_point = int(store.value("select coalesce(sum(bytes), 0)::hugeint from facts_hourly where hour >= ? and hour < ?",
                                 [pstart, same_point]))
    objects, unjoined, exact, timed = (int(v) for v in store.execute(
        """select coalesce(sum(object_bytes), 0)::hugeint, coalesce(sum(unjoined_bytes), 0)::hugeint,
                  coalesce(sum(exact_bytes), 0)::hugeint, coalesce(sum(timed_bytes), 0)::hugeint
           from facts_hourly where hour >= ? and hour < ?""", [start, as_of])[0])
    budget_bytes = status["budget_bytes"]
    projected = status["projected_bytes"]
    return {
        "report": "pullwarden monthly TiB budget report",
        "units": "bytes; TiB = 2^40 bytes, GiB = 2^30 bytes",
        "month": month, "timezone": tz.key, "start": start.isoformat(), "end": end.isoformat(),
        "partial": not is_closed, "as_of": as_of.isoformat(), "days_in_month": status["days_in_month"],
        "total_bytes": total, "budget_bytes": budget_bytes, "projected_bytes": projected,
        "requests": int(totals[0]), "addresses": totals[1],
        # redirected blobs: bytes read from object-storage logs; joined exactly (referer, own 307),
        # by blob and time alone (an estimate: S3 links carry no referer), or not joined
        "object_bytes": objects, "unjoined_bytes": unjoined, "exact_bytes": exact, "timed_bytes": timed,
        "object_share": round(objects / total, 6) if total else 0.0,
        "budget_share": round(total / budget_bytes, 6) if budget_bytes else None,
        "projection": status["projection"] if not is_closed else None,
        "guard": status["guard"],
        "days_until_exhausted": status["days_until_exhausted"] if not is_closed else None,
        "allowed_bytes_per_day": status["allowed_bytes_per_day"] if not is_closed else None,
        "daily": _daily(store, start, as_of, tz.key),
        "previous_month": {"month": pmonth, "total_bytes": prev_total, "change": total - prev_total,
                           "change_share": round((total - prev_total) / prev_total, 6) if prev_total else None,
                           "trend": trend(total, prev_total)},
        "same_point_last_month": {"until": same_point.isoformat(), "bytes": prev_point, "change": total - prev_point,
                                  "change_share": round((total - prev_point) / prev_point, 6) if prev_point else None,
                                  "trend": trend(total, prev_point)},
        "movers": {name: _movers(store, name) for name in ("image", "asn", "address")},
        "breakdowns": {**{name: _breakdown(store, name, total, (start, as_of))
                          for name in ("registry", "asn", "country", "family", "image")},
                       "tier": _tiers(store, start, as_of, total)},
        "top_consumers": _consumers(store, total),
        "cost": cost(total, prices, currency),
        "projected_cost": cost(projected, prices, currency) if not is_closed else None,
        "decisions": _impact(store, start, end, as_of),
    }

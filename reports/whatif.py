"""What if the anonymous tier were changed: the month's anonymous traffic replayed through
other limits, and the month's end projected with the difference.

A documented approximation, not a simulation of nginx:
- anonymous traffic: requests without a user (remote_user empty) from addresses that, at the
  time of the budget status, are not allowlisted (address, range, AS number) and have no ban or
  tier assignment in force (address, range, AS number); their whole month is replayed.
- the rate limit (requests_per_minute + burst), replayed only when one of them is given: in each
  minute an address gets at most rate + burst requests; its bytes in that minute are scaled by
  the share of its requests that pass (the requests refused are taken as average ones).
- the byte window (window_bytes per window_seconds): windows are fixed, aligned to the epoch, per
  address; bytes beyond the cap in a window are not served.
- the rest of the month: the projection is scaled by the share of the month's bytes that the
  change would have kept (same traffic, same limits).
"""
from __future__ import annotations

import ipaddress
from datetime import datetime

from reports import budget as budget_mod

LIMITS = ("requests_per_minute", "burst", "window_bytes", "window_seconds")


def anonymous_limits(store) -> tuple[str, dict]:
    name = store.value("select value from kv where key = 'anonymous_tier'") or "anonymous"
    row = store.execute(f"select {', '.join(LIMITS)} from tiers where name = ?", [name])
    return name, dict(zip(LIMITS, row[0] if row else [None] * len(LIMITS)))


def _excluded(store, lo: datetime, hi: datetime, at: datetime) -> list[str]:
    """Addresses with anonymous traffic in [lo, hi) that are not in the anonymous tier at ``at``:
    allowlisted, banned, or assigned a tier."""
    entries = store.execute("""
        select kind, value from allowlist where until is null or until > $at
        union all
        select case scope when 'range' then 'cidr' else scope end, value from decisions
        where revoked_at is null and until > $at and created_at <= $at and not simulated and held is null""",
        {"at": at})
    if not entries:
        return []
    ips = {v for k, v in entries if k == "ip"}
    asns = [v for k, v in entries if k == "asn"]
    nets = [n for k, v in entries if k == "cidr" for n in [_net(v)] if n]
    out = set()
    candidates = store.execute("""
        select distinct f.client_ip, cast(i.asn as varchar) from facts_hourly f left join ip_info i on i.ip = f.client_ip
        where f.hour >= $lo and f.hour < $hi and f.remote_user is null""", {"lo": lo, "hi": hi})
    for ip, asn in candidates:
        if ip in ips or (asn is not None and asn in asns):
            out.add(ip)
        elif nets:
            a = _addr(ip)
            if a and any(a.version == n.version and a in n for n in nets):
                out.add(ip)
    return sorted(out)


def _net(v: str):
    try:
        return ipaddress.ip_network(v, strict=False)
    except ValueError:
        return None


def _addr(v: str):
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        return None


def replay(store, lo: datetime, hi: datetime, excluded: list[str], limits: dict, rate: bool) -> tuple[int, int]:
    """(bytes the anonymous traffic took, bytes it would have taken under ``limits``)."""
    rpm, burst = limits.get("requests_per_minute"), limits.get("burst")
    cap, span = limits.get("window_bytes"), limits.get("window_seconds") or 3600
    params = {"lo": lo, "hi": hi, "ex": excluded, "rpm": rpm, "burst": burst if burst is not None else
              (2 * rpm if rpm else None), "cap": cap, "span": span}
    keep = "and not list_contains($ex::varchar[], client_ip)" if excluded else ""
    if rate and rpm:
        windows = f"""
            select client_ip, floor(epoch(t) / $span) as w, sum(b) as b, sum(raw) as raw from (
                select client_ip, date_trunc('minute', ts) as t,
                       coalesce(sum(bytes), 0) * least(1.0, ($rpm + $burst) / count(*)) as b,
                       coalesce(sum(bytes), 0) as raw
                from events where ts >= $lo and ts < $hi and remote_user is null {keep} group by all)
            group by all"""
    elif span % 3600 == 0:          # whole hours: the hourly roll-up is enough
        windows = f"""
            select client_ip, floor(epoch(hour) / $span) as w, sum(bytes) as b, sum(bytes) as raw from facts_hourly
            where hour >= $lo and hour < $hi and remote_user is null {keep} group by all"""
    else:
        windows = f"""
            select client_ip, floor(epoch(ts) / $span) as w, coalesce(sum(bytes), 0) as b,
                   coalesce(sum(bytes), 0) as raw
            from events where ts >= $lo and ts < $hi and remote_user is null {keep} group by all"""
    sql = f"""
        select coalesce(sum(raw), 0)::hugeint,
               coalesce(sum(case when $cap::bigint is null then b else least(b, $cap::bigint) end), 0)::double
        from ({windows})"""
    row = store.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})[0]
    return int(row[0]), int(round(row[1]))


def whatif(store, tz_name: str, now: datetime | None, changes: dict, month: str | None = None) -> dict:
    """Month-to-date and month-end bytes, as they are and with the anonymous tier's limits
    changed by ``changes`` (any of LIMITS; the others keep the tier's value)."""
    unknown = set(changes) - set(LIMITS)
    if unknown:
        raise ValueError(f"unknown limit {', '.join(sorted(unknown))}: the limits are {', '.join(LIMITS)}")
    s = budget_mod.status(store, tz_name, now, month)
    tier, current = anonymous_limits(store)
    limits = {**current, **{k: v for k, v in changes.items() if v is not None}}
    out = {"month": s["month"], "timezone": s["timezone"], "as_of": s["as_of"], "tier": tier, "current": current,
           "limits": limits, "budget_bytes": s["budget_bytes"], "used_bytes": s["used_bytes"],
           "projected_bytes": s["projected_bytes"], "method": __doc__.split("\n\n", 1)[1].strip()}
    if s["month"] is None:
        return {**out, "anonymous_bytes": 0, "anonymous_bytes_after": 0, "anonymous_bytes_at_current_limits": 0,
                "used_bytes_after": 0,
                "projected_bytes_after": 0, "saved_bytes": 0, "addresses_excluded": 0}
    excluded = _excluded(store, s["start"], s["as_of"], s["as_of"])
    rate = any(changes.get(k) is not None for k in ("requests_per_minute", "burst"))
    before, after = replay(store, s["start"], s["as_of"], excluded, limits, rate)
    # the logs were not necessarily served under today's limits (they changed, or the proxy did
    # not enforce them yet): what those would have cut, beside what the change would
    at_current = after if not rate and limits == current else \
        replay(store, s["start"], s["as_of"], excluded, current, False)[1]
    saved = max(0, before - after)
    kept = (s["used_bytes"] - saved) / s["used_bytes"] if s["used_bytes"] else 1.0
    return {**out, "anonymous_bytes": before, "anonymous_bytes_after": after, "saved_bytes": saved,
            "anonymous_bytes_at_current_limits": at_current,
            "used_bytes_after": s["used_bytes"] - saved, "projected_bytes_after": round(s["projected_bytes"] * kept),
            "projection_after": {k: round(s["projection"][k] * kept) for k in ("linear", "weekday", "low", "high")},
            "guard_after": budget_mod.levels(s["used_bytes"] - saved, round(s["projected_bytes"] * kept),
                                             s["budget_bytes"])["level"],
            "addresses_excluded": len(excluded)}

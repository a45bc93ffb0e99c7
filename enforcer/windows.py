"""Byte windows: a tier's `window_bytes` per `window_seconds`, enforced for every proxy.

No proxy reader counts them for every tier (nginx has no byte budget; CRProxy has one set of
limits for everyone), but serve sees every byte in the log. After each ingest run that stored
events, the addresses with new anonymous requests (no user) are summed over their tier's
current window — windows are fixed and aligned to the epoch, as the budget what-if counts them
— and one over its tier's bytes is banned for the rest of that window: a decision with the
numbers as its reason, so every proxy refuses it through the address layers it already reads
(nginx's geo, CRProxy's block list, the CrowdSec stream, /v1/check).

An address is in the tier /v1/check gives it: allowlisted ones are never counted, banned ones
need nothing more, an assignment (address, range, AS number) before the anonymous default.
Requests with a user are left out: /v1/check gives them the authenticated tier, which nginx
cannot tell from the address alone. An admin who revokes such a ban is not overruled in the
same window."""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.allowlist import Allowlist
from core.types import Decision
from core.values import why_not_ban
from enforcer.changes import guard
from enforcer.routes.policy import _rank
from rules.policy import PassResult, apply

log = logging.getLogger("pullwarden.windows")
RULE = "byte-window"
EPOCH = datetime(1970, 1, 1)


@dataclass
class Counted:
    """Where the last look stopped: the events' and the object-store events' seq."""
    events: int = -1
    objects: int = -1


def bounds(now: datetime, seconds: int) -> tuple[datetime, datetime]:
    """The fixed window, aligned to the epoch, that ``now`` is in."""
    start = EPOCH + timedelta(seconds=(int((now - EPOCH).total_seconds()) // seconds) * seconds)
    return start, start + timedelta(seconds=seconds)


def _size(n: int) -> str:
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n} bytes"


def _span(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min" if seconds % 60 == 0 \
        else f"{seconds} s"


def tier_of(version, addr, asn: str | None) -> str | None:
    """The tier /v1/check gives an anonymous request from ``addr``; None when it is banned
    (nothing more to do)."""
    allowlisted = version.allowlisted(addr)
    if not allowlisted and version.covering("bans", addr, None, asn):
        return None
    assigned = sorted((e for e in version.covering("assignments", addr, None, asn)
                       if not (allowlisted and e.effect == "throttle")), key=_rank)
    return assigned[0].tier if assigned else version.content["default_tiers"]["anonymous"]


def totals(store, start: datetime, end: datetime, after: Counted, least: int) -> dict[str, int]:
    """Bytes in [start, end) of the addresses with anonymous requests after ``after``, those
    over ``least``: the requests' own bytes and, for a redirecting mirror, the object store's."""
    return dict(store.execute("""
        with recent as (
            select distinct client_ip from events
            where seq > $e and ts >= $start and ts < $end and coalesce(remote_user, '') in ('', '-')
            union
            select distinct client_ip from object_events where seq > $o and ts >= $start and ts < $end),
        bytes as (
            select client_ip, bytes from events
            where ts >= $start and ts < $end and coalesce(remote_user, '') in ('', '-')
              and client_ip in (select client_ip from recent)
            union all
            select client_ip, bytes from object_events
            where ts >= $start and ts < $end and client_ip in (select client_ip from recent)
              -- object reads only: the mirror's own ListObjects before each redirect is no client's
              and (operation is null or operation like '%.GET.OBJECT' or operation = 'GetObject'))
        select client_ip, sum(bytes)::bigint from bytes group by client_ip having sum(bytes) > $least""",
        {"e": after.events, "o": after.objects, "start": start, "end": end, "least": least}))


def enforce(services, counted: Counted) -> list[Decision]:
    """One look; the bans it made (already published)."""
    version = services.publisher.current
    windows = {name: t for name, t in version.content["tiers"].items()
               if t.get("window_bytes") and t.get("window_seconds")}
    if not windows:
        return []
    now = services.clock()
    with services.store.reading() as store:
        top = Counted(*store.execute("""select (select coalesce(max(seq), -1) from events),
                                               (select coalesce(max(seq), -1) from object_events)""")[0])
        if (top.events, top.objects) == (counted.events, counted.objects):
            return []
        over: dict[str, dict[int, int]] = {}       # address -> window length -> bytes in it
        for seconds in sorted({t["window_seconds"] for t in windows.values()}):
            least = min(t["window_bytes"] for t in windows.values() if t["window_seconds"] == seconds)
            for ip, n in totals(store, *bounds(now, seconds), counted, least).items():
                over.setdefault(ip, {})[seconds] = n
        asns = dict(store.execute("""select ip, cast(asn as varchar) from ip_info
                                     where ip in (select unnest($ips::varchar[]))""", {"ips": list(over)})) \
            if over else {}
    counted.events, counted.objects = top.events, top.objects
    if not over:
        return []
    protect = guard(services.settings)
    new = []
    with services.lock, services.store.unit():      # the bans made, or none
        done = {v for (v,) in services.store.execute("""
            select value from decisions where rule = $rule and scope = 'ip' and until > $now
              and value in (select unnest($ips::varchar[]))""", {"rule": RULE, "now": now, "ips": list(over)})}
        allow = Allowlist(services.store, now)
        for ip, sums in sorted(over.items()):
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                continue        # not an address (a log's junk)
            name = tier_of(version, addr, asns.get(ip))
            t = windows.get(name)
            n = sums.get(t["window_seconds"], 0) if t else 0
            if t is None or n <= t["window_bytes"] or ip in done:
                continue        # ``done``: banned for this window already, or an admin lifted it
            seconds = t["window_seconds"]
            start, end = bounds(now, seconds)
            if allow.covers("ip", ip) or why_not_ban("ip", ip, protect["widest"], protect["protected"]):
                continue
            new.append(Decision(
                "ip", ip, "ban",
                f"{_size(n)} in the {_span(seconds)} window from {start:%H:%M} UTC, over tier {name}'s "
                f"{_size(t['window_bytes'])}: refused until {end:%H:%M} UTC", now, end, rule=RULE,
                evidence={"bytes": n, "tier": name, "window_bytes": t["window_bytes"], "window_seconds": seconds,
                          "window_start": start}))
        if new:
            apply(services.store, PassResult(now, new=new))
    if new:
        services.publisher.publish()
        log.warning("byte windows: %d address(es) over their tier's window banned until its end", len(new))
    return new

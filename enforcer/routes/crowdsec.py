"""CrowdSec's bouncer API, so that every stock bouncer can enforce pullwarden's bans.

Only bans go here: stock bouncers treat an unknown decision type as a ban. The stream keeps a
cursor per key on the policy version it last delivered, not on the wall clock, so a decision
that expired, was revoked or was extended shows up exactly once in `deleted` or `new`.

A bouncer further behind than the versions kept (HISTORY) is sent everything in force under
`new`, and under `deleted` every ban that ended since its version was made (the decisions
table keeps when each was revoked or ran out): a stock bouncer that is not starting up keeps
what it has, so without them a revoked ban stayed in force there until the bouncer restarted.
"""
from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring_ascii as _q
from typing import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from enforcer.deps import BouncerKey, ServicesDep
from enforcer.entries import Entries
from enforcer.snapshot import range_entries

router = APIRouter(prefix="/v1", tags=["crowdsec"])
SCOPES = {"ip": "Ip", "range": "Range", "asn": "AS"}


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() rounded to seconds: 3h59m59s, 1m0s, 0s, -5s."""
    sign = "-" if seconds < 0 else ""
    total = int(round(abs(seconds)))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"


def _csv(value: str | None) -> list[str]:
    return [v.strip().lower() for v in (value or "").split(",") if v.strip()]


class Filter:
    def __init__(self, request: Request):
        q = request.query_params
        self.scopes = {s for s in _csv(q.get("scopes")) or ["ip", "range"]}
        self.origins = set(_csv(q.get("origins")))
        self.containing = _csv(q.get("scenarios_containing"))
        self.not_containing = _csv(q.get("scenarios_not_containing"))

    def admits(self, scope: str, rule: str | None) -> bool:
        scope = SCOPES.get(scope)
        if scope is None or scope.lower() not in self.scopes:
            return False
        if self.origins and "pullwarden" not in self.origins:
            return False
        scenario = (rule or "manual").lower()
        if self.containing and not any(c in scenario for c in self.containing):
            return False
        return not any(c in scenario for c in self.not_containing)


def _decision(e: dict, now: datetime, deleted: bool = False) -> dict:
    left = (datetime.fromisoformat(e["until"]) - now).total_seconds() if "until" in e else 0
    return {"id": e["id"], "origin": "pullwarden", "type": "ban", "scope": SCOPES[e["scope"]], "value": e["value"],
            "duration": go_duration(min(-1.0, -abs(left)) if deleted else left),   # deleted: always negative
            "scenario": e.get("rule") or "manual"}


# Deletions for a far-behind bouncer reach back this much before its version was made: a few
# too many cost a line each (a bouncer deletes what it does not have without complaint), one
# too few is a ban that never ends there.
OVERLAP = timedelta(seconds=60)


def ended_since(store, since: datetime, now: datetime) -> list[dict]:
    """The bans that were revoked or ran out after ``since``, one per entity (its latest
    decision), whether or not another decision has taken its place since."""
    rows = store.execute("""
        select scope, value, max(id), arg_max(coalesce(rule, 'manual'), id),
               max(coalesce(revoked_at, until))
        from decisions
        where effect = 'ban' and not simulated and scope in ('ip', 'range', 'asn')
          and (revoked_at >= $since or (until >= $since and until <= $now))
        group by scope, value""", {"since": since, "now": now})
    return [{"id": i, "scope": scope, "value": value, "rule": rule, "until": end.isoformat()}
            for scope, value, i, rule, end in rows]


def _body(new: Iterator[dict], deleted: Iterator[dict], group: int = 1000) -> Iterator[bytes]:
    """The response in pieces of about a thousand decisions: a start-up with 100,000 is never one
    big string, and not 100,000 tiny writes either."""
    for n, (key, items) in enumerate((("new", new), ("deleted", deleted))):
        yield (b'{"' if n == 0 else b'],"') + key.encode() + b'":['
        batch: list[str] = []
        first = True
        for d in items:
            batch.append(json.dumps(d, separators=(",", ":")))
            if len(batch) >= group:
                yield ("" if first else ",").encode() + ",".join(batch).encode()
                first, batch = False, []
        if batch:
            yield ("" if first else ",").encode() + ",".join(batch).encode()
    yield b"]}"


@router.get("/decisions/stream", operation_id="decisions_stream")
@router.head("/decisions/stream", operation_id="decisions_stream_head")
async def stream(request: Request, services: ServicesDep, who: BouncerKey) -> Response:
    """New and deleted bans since this key's last pull (`startup=true`: every ban in force)."""
    services.polls[who.name] += 1
    f = Filter(request)
    version = services.publisher.current
    now = services.clock()
    startup = request.query_params.get("startup", "false").lower() == "true"
    since = services.cursors.get(who.id)
    if request.method == "HEAD":
        return Response(status_code=200, media_type="application/json")

    def poll() -> bytes | None:
        delta = services.publisher.changes(since)
        if delta is None:
            return None
        new = (_decision(e, now) for e in delta["upsert"]["bans"] if f.admits(e["scope"], e["rule"]))
        gone = (_decision(e, now, deleted=True) for e in delta["remove"]["bans"] if f.admits(e["scope"], e["rule"]))
        body = b"".join(_body(new, gone))
        services.cursors[who.id] = delta["version"]        # what was sent: current may have moved on
        # made no later than what was sent: what ended after it is what a far-behind poll deletes
        services.cursor_at[who.id] = version.generated_at
        return body
    if not startup and since is not None:
        # a poll is small and answered at once; after a bulk change it is built on a worker
        # thread, so that the event loop goes on answering everyone else
        big = services.publisher.delta_size(since) > 1000
        body = await run_in_threadpool(poll) if big else poll()
        if body is not None:
            return Response(body, media_type="application/json")
    # start-up, a new key, or a cursor older than the history kept: everything in force, and
    # for the last what ended since (stale())
    bans = version.content["bans"]
    now_s = now.replace(tzinfo=timezone.utc).timestamp()

    def body():
        yield b'{"new":['
        first = True
        for piece in new_bans(bans, f, now_s):
            yield piece if first else b"," + piece
            first = False
        yield b'],"deleted":['
        gone = [json.dumps(_decision(e, now, deleted=True), separators=(",", ":")) for e in stale()
                if f"{e['scope']}:{e['value']}" not in bans and f.admits(e["scope"], e["rule"])]
        yield ",".join(gone).encode() + b"]}"
        services.cursors[who.id] = version.version          # delivered whole: move the cursor
        services.cursor_at[who.id] = version.generated_at

    def stale() -> list[dict]:
        """A cursor too far behind: what ended since its version (a start-up, or a key never
        seen, has nothing to delete). Ranges published in pieces around the allowlist are
        deleted whole: the bouncer may hold them from before the allowlist entry. A replica
        has no decisions table and deletes nothing."""
        at = services.cursor_at.get(who.id)
        if startup or since is None or at is None or services.store is None:
            return []
        with services.store.reading() as store:
            ended = ended_since(store, at - OVERLAP, now)
        carved = [{"id": bans[p[0]].id if p and p[0] in bans else 0, "scope": "range", "value": key[6:],
                   "rule": bans[p[0]].rule if p and p[0] in bans else "manual", "until": now.isoformat()}
                  for key, p in list(services.publisher.carved.items())]
        return ended + carved
    return StreamingResponse(body(), media_type="application/json")


# a value that needs no JSON escaping: copied as it is
_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


def new_bans(bans, f: Filter, now_s: float, group: int = 1000) -> Iterator[bytes]:
    """A start-up's `new` decisions, about ``group`` a piece, joined by commas. Packed entries
    (enforcer/entries.py) are read a scope at a time, column by column: each expiry's duration
    and each rule's scenario are written once, each value copied as bytes: a million bans in
    about half the time of building them one Entry at a time."""
    if not isinstance(bans, Entries):
        yield from _new_bans_of(bans.values(), f, now_s, group)
        return
    seconds: dict[int, float] = {}
    for scope, name in SCOPES.items():
        block = bans.block(scope + ":")
        if not block or f.scopes.isdisjoint({name.lower()}):
            continue
        blob, offs = bans.blob, bans.offsets
        if _UNSAFE.search(blob, offs[block.start], offs[block.stop]):
            yield from _new_bans_of(bans.values_in(block), f, now_s, group)
            continue
        strings, ids, untils, rules = bans.strings, bans.ids, bans.columns[0], bans.columns[2]
        mid, skip = f',"origin":"pullwarden","type":"ban","scope":"{name}","value":"'.encode(), len(scope) + 1
        tails: dict[int, bytes | None] = {}
        batch: list[bytes] = []
        for i in block:
            u, r = untils[i], rules[i]
            tail = tails.get(u << 32 | r, b"")
            if tail == b"":
                tail = None
                if f.admits(scope, strings[r]):
                    if u not in seconds:
                        seconds[u] = datetime.fromisoformat(strings[u]).replace(tzinfo=timezone.utc).timestamp()
                    tail = f'","duration":"{go_duration(seconds[u] - now_s)}","scenario":{_q(strings[r])}}}'.encode()
                tails[u << 32 | r] = tail
            if tail is None:
                continue
            batch.append(b'{"id":%d%s%s%s' % (ids[i], mid, blob[offs[i] + skip:offs[i + 1]], tail))
            if len(batch) >= group:
                yield b",".join(batch)
                batch = []
        if batch:
            yield b",".join(batch)


def _new_bans_of(entries, f: Filter, now_s: float, group: int) -> Iterator[bytes]:
    """new_bans() for entries one by one (a replica's dict, a value that needs escaping)."""
    seconds: dict[str, float] = {}      # expiries repeat (a bulk import): each parsed once
    batch: list[str] = []
    for e in entries:
        scope, _, value = e.key.partition(":")
        if not f.admits(scope, e.rule):
            continue
        until = seconds.get(e.until)
        if until is None:
            until = seconds[e.until] = datetime.fromisoformat(e.until).replace(tzinfo=timezone.utc).timestamp()
        batch.append(f'{{"id":{e.id},"origin":"pullwarden","type":"ban","scope":"{SCOPES[scope]}",'
                     f'"value":{_q(value)},"duration":"{go_duration(until - now_s)}","scenario":{_q(e.rule)}}}')
        if len(batch) >= group:
            yield ",".join(batch).encode()
            batch = []
    if batch:
        yield ",".join(batch).encode()


def _inside(value: str, rng) -> bool:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    return addr.version == rng.version and addr in rng


@router.get("/decisions", operation_id="decisions")
@router.head("/decisions", operation_id="decisions_head")
def decisions(request: Request, services: ServicesDep, who: BouncerKey) -> Response:
    """Bans in force that cover one address or range (`ip=`, `range=`), or all (`scope=`, `value=`)."""
    q = request.query_params
    version = services.publisher.current
    now = services.clock()
    try:
        ip = ipaddress.ip_address(q["ip"]) if q.get("ip") else None
        rng = ipaddress.ip_network(q["range"], strict=False) if q.get("range") else None
    except ValueError:
        return Response('{"message":"bad address"}', status_code=400, media_type="application/json")
    if ip is not None and ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip is not None:                      # the address's own bans and the ranges around it
        candidates = version.covering("bans", ip=ip)
    elif rng is not None:
        candidates = [e for net, e in version.ranges("bans") if net.version == rng.version and net.overlaps(rng)]
        candidates += [e for e in range_entries(version.content["bans"], "ip") if _inside(e.value, rng)]
    else:
        candidates = version.content["bans"].values()
    out = [_decision(e.as_dict(), now) for e in candidates
           if e.scope in ("ip", "range") and (not q.get("value") or e.value == q["value"])
           and (not q.get("scope") or SCOPES[e.scope].lower() == q["scope"].lower())]
    if request.method == "HEAD":
        return Response(status_code=200, media_type="application/json")
    return Response(json.dumps(out), media_type="application/json")

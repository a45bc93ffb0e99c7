"""The published policy: immutable, numbered snapshots of the bans, tier assignments, tiers,
image lists and allowlist, served from memory. Each version keeps its difference from the one
before, so pollers (our proxies, CrowdSec bouncers) can ask for what changed.

A rebuild looks only at what changed: the entities of decisions whose change number (`seq`)
moved since the last version, and entries that expired. The published bans and assignments
are also kept as rows (`policy_entries`), so the difference is computed in SQL, and is still
right after a restart."""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Iterator

from enforcer import asnets, heap
from enforcer.body import render, write  # noqa: F401  (render: imported from here)
from enforcer.entries import Builder, Entries, Entry  # noqa: F401  (Entry: imported from here)
from enforcer.changes import TIER_FIELDS

log = logging.getLogger("pullwarden.policy")
HISTORY = 2000          # versions whose changes are kept; older `since` values get 410
DELTA_STEP = 5000       # entries of a difference stored per version (see Publisher._steps)
HISTORY_READ = 4 << 20  # bytes of stored differences read at a time after a restart
ENTRIES = ("assignments", "bans")
SMALL = ("allowlist", "asn_networks", "default_tiers", "images", "tiers", "requests")

# The decision that wins for each entity: one ban (the longest); one assignment (a throttle
# beats a boost, then the longest). {only} narrows it to the entities that changed.
WANT = """
    select case when effect = 'ban' then 'bans' else 'assignments' end as section,
           scope || ':' || value as key, id, scope, value, until, reason, coalesce(rule, 'manual') as rule,
           case when effect <> 'ban' then effect end as effect, case when effect <> 'ban' then tier end as tier
    from decisions
    where revoked_at is null and not simulated and held is null and until > $now {only}
    qualify row_number() over (partition by effect = 'ban', scope, value
                               order by effect = 'throttle' desc, until desc, id desc) = 1
"""
# the values first: a plain column against a few values, before a million keys are put together
# (a version with one ban more beside 1 M: 0.15-0.3 s -> 0.02 s)
ONLY = """and value in (select unnest($values::varchar[]))
          and scope || ':' || value in (select unnest($keys::varchar[]))"""
COLUMNS = "section, key, id, scope, value, until, reason, rule, effect, tier"
SAME = """p.section = w.section and p.key = w.key and p.id = w.id and p.until = w.until and p.reason = w.reason
          and p.rule = w.rule and p.effect is not distinct from w.effect and p.tier is not distinct from w.tier"""


def requests_section(settings) -> dict:
    """How a proxy reads a request's image and who asks (the nginx include): serve's settings."""
    return {"default_registry": settings.default_registry,
            "host_registries": {h.lower(): r for h, r in sorted(settings.host_registries.items())},
            "upstream_checks_credentials": settings.upstream_checks_credentials}


REQUESTS = {"default_registry": "docker.io", "host_registries": {}, "upstream_checks_credentials": False}


def small_sections(store, now: datetime, requests: dict | None = None, asn_networks=None) -> dict:
    """Tiers, default tiers, image lists, the allowlist, how requests are read and the networks
    of banned AS numbers (from ``asn_networks``, an enforcer.asnets.ASNetworks): small, rebuilt
    whole each time."""
    tiers = {r[0]: dict(zip(TIER_FIELDS, r[1:])) for r in store.execute("""
        select name, requests_per_minute, burst, concurrent, blob_bytes_per_second, window_bytes, window_seconds
        from tiers order by name""")}
    kv = dict(store.execute("select key, value from kv"))
    images: dict[str, list[str]] = {"allowed": [], "unlimited": [], "blocked": []}
    for lst, pattern in store.execute("select list, pattern from image_lists"):
        images[lst].append(pattern)
    for lst in images:          # CRProxy refuses a list that is not sorted in byte order
        images[lst] = sorted(set(images[lst]), key=lambda p: p.encode())
    allowed = sorted(v for (v,) in store.execute("""
        select value from allowlist where kind in ('ip', 'cidr') and (until is null or until > ?)""", [now]))
    nets = asnets.section(store, now, asn_networks, carve, [n for v in allowed if (n := _network(v))])
    return {"tiers": tiers, "allowlist": allowed, "images": images, "asn_networks": nets,
            "default_tiers": {"anonymous": kv.get("anonymous_tier", "anonymous"),
                              "authenticated": kv.get("authenticated_tier", "authenticated")},
            "requests": requests or REQUESTS}


def carve(net, allowed: list) -> list:
    """What of a banned range the allowlist leaves banned: the range minus every allowlisted
    network inside it, as the fewest CIDRs (a /24 around one address: 8 ranges; a /64: 64).
    Dialects without exceptions (CrowdSec's stream, CRProxy's list) can only say it this way,
    so every dialect is given it this way."""
    pieces = [net]
    for a in allowed:
        if a.version != net.version:
            continue
        out = []
        for p in pieces:
            if p.subnet_of(a):
                continue                        # wholly allowlisted
            out += list(p.address_exclude(a)) if a.subnet_of(p) else [p]
        pieces = out
    return list(ipaddress.collapse_addresses(pieces)) if pieces else []


def packed(entries) -> Entries:
    """A section as Entries (a replica's, or a test's, may be a dict)."""
    return entries if isinstance(entries, Entries) else Entries.build(entries.values())


def _packed_want(store) -> dict[str, Entries]:
    """policy_want's rows as Entries, one per section, read in key order."""
    builders = {s: Builder() for s in ENTRIES}
    iso: dict = {}
    for batch in store.batches(f"select {COLUMNS} from policy_want order by section, key"):
        for section, key, id_, _, _, until, reason, rule, effect, tier in batch:
            u = iso.get(until)
            if u is None:
                u = iso[until] = until.isoformat()
            builders[section].add(key, id_, u, reason, rule, effect, tier)
    return {s: b.done() for s, b in builders.items()}


def _entry(row, strings: dict) -> Entry:
    """An Entry from a row (section, key, id, scope, value, until, ...); repeated strings (a
    rule, a reason, an expiry shared by a bulk import) are kept once."""
    _, key, id_, _, _, until, reason, rule, effect, tier = row
    s = strings.setdefault
    return Entry(key, id_, s(until.isoformat(), until.isoformat()), s(reason, reason),
                 s(rule, rule), effect and s(effect, effect), tier and s(tier, tier))


def in_order(entries):
    """A section's (key, Entry) pairs in key order: packed Entries are kept so."""
    if isinstance(entries, Entries):
        return entries.items()
    return ((k, entries[k]) for k in sorted(entries))


def expired(entries, at: str) -> list[str]:
    """The keys of the entries that ended at ``at`` (an ISO time) or before."""
    if isinstance(entries, Entries):
        return entries.ended(at)
    return [k for k, e in entries.items() if e.until <= at]


def range_entries(entries, scope: str = "range") -> Iterator[Entry]:
    """The entries of one scope (ranges unless said): packed ones sort together."""
    if isinstance(entries, Entries):
        return entries.values_in(entries.block(scope + ":"))
    return (e for e in entries.values() if e.scope == scope)


def unzipped(body: bytes, size: int = 1 << 18, step: int = 1 << 16) -> Iterator[bytes]:
    """A gzipped body in pieces of at most `size` bytes, for clients that do not take gzip. The
    input goes in `step` bytes at a time: given the whole body, zlib hands back what it has not
    read yet as a new copy (unconsumed_tail) after every piece, so each download held a copy of
    the rest of the body (18 MB at 1 M bans; eight clients at once, +126 MB of RSS) and copied
    it again for every 256 KB it sent."""
    d = zlib.decompressobj(31)
    view = memoryview(body)
    for start in range(0, len(view), step):
        data = view[start:start + step]
        while data:
            if piece := d.decompress(data, size):
                yield piece
            data = d.unconsumed_tail
    if rest := d.flush():
        yield rest


@dataclass
class Version:
    version: int
    generated_at: datetime
    content: dict                # bans/assignments: {key: Entry}; the small sections as JSON values
    body: bytes                  # the JSON of GET /v1/policy, gzipped
    etag: str
    # what changed from the previous version
    upserted: dict = field(default_factory=dict)      # "bans"/"assignments" -> {key: Entry}
    removed: dict = field(default_factory=dict)       # "bans"/"assignments" -> {key: Entry}
    sections: set = field(default_factory=set)        # small sections that changed
    digest: str = ""
    next_expiry: str | None = None                    # ISO time at which the content changes by itself
    seq: int = 0                                      # the decisions' change number it was built at
    has_delta: bool = True                            # False: built with nothing to compare with
    cache: dict = field(default_factory=dict)         # derived forms, built once per version
    chunks: dict = field(default_factory=dict)        # the body's pieces, for the next version's (body.py)

    def covering(self, section: str, ip=None, user: str | None = None, asn: str | None = None) -> list[Entry]:
        """The entries of a section that apply to an address (exact or in a range), a user or an
        AS number: a few lookups and a pass over the ranges, not over 100,000 entries. An IPv4
        address and its IPv4-mapped IPv6 form are the same client."""
        entries = self.content[section]
        addrs = address_forms(ip)
        if asn is None and addrs:       # an address ingest never saw: its AS from the published networks
            asn = self.banned_as(addrs)
        keys = [f"ip:{a}" for a in addrs] + [f"user:{user}" if user else None, f"asn:{asn}" if asn else None]
        found = [entries[k] for k in keys if k is not None and k in entries]
        if addrs:
            found += [e for net, e in self.ranges(section)
                      if any(net.version == a.version and a in net for a in addrs)]
        return found

    def banned_as(self, addrs: list) -> str | None:
        """The banned AS number whose published networks (asn_networks) hold one of ``addrs``."""
        nets = self.cache.get("asn networks")
        if nets is None:
            nets = self.cache["asn networks"] = [(n, asn) for asn, ns in self.content.get("asn_networks", {}).items()
                                                 for v in ns if (n := _network(v))]
        return next((asn for net, asn in nets for a in addrs if a.version == net.version and a in net), None)

    def allowlisted(self, ip) -> bool:
        """Whether an address (in either spelling) is in an allowlisted address or range; the
        networks are parsed once per version, not once per request."""
        nets = self.cache.get("allowlist")
        if nets is None:
            nets = self.cache["allowlist"] = [n for v in self.content["allowlist"] if (n := _network(v))]
        return any(net.version == a.version and a in net for net in nets for a in address_forms(ip))

    def ranges(self, section: str) -> list[tuple]:
        rows = self.cache.get(("ranges", section))
        if rows is None:
            rows = self.cache[("ranges", section)] = [
                (n, e) for e in range_entries(self.content[section]) if (n := _network(e.value))]
        return rows


def _network(value: str):
    """The network a value names; None when it names none (it then covers nobody)."""
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _size(chain: list[Version]) -> int:
    return sum(len(v.upserted.get(s, ())) + len(v.removed.get(s, ())) for v in chain for s in ENTRIES)


def address_forms(ip) -> list:
    """An address and its other spelling: a.b.c.d <-> ::ffff:a.b.c.d."""
    if ip is None:
        return []
    if ip.version == 6 and ip.ipv4_mapped:
        return [ip, ip.ipv4_mapped]
    if ip.version == 4:
        return [ip, ipaddress.IPv6Address(f"::ffff:{ip}")]
    return [ip]


class Publisher:
    """Builds and numbers snapshots; thread-safe; versions only grow, across restarts too."""

    def __init__(self, store, lock: threading.RLock, clock: Callable[[], datetime], max_age: int,
                 requests: dict | None = None):
        self.store, self.lock, self.clock, self.max_age = store, lock, clock, max_age
        self.requests = requests
        self.history: dict[int, Version] = {}
        self.current: Version | None = None
        # banned ranges published in pieces around allowlisted networks: range key -> piece keys
        self.carved: dict[str, list[str]] = {}
        # called with each new version, inside the lock (in order): the replicas' folder
        self.listeners: list[Callable[[Version], None]] = []
        self.asn_networks = None      # enforcer.asnets.ASNetworks when asn_db is set

    def publish(self) -> Version:
        """A new version if anything changed since the current one, else the current one."""
        with self.lock:
            now = self.clock()
            before = self.current
            version = self._first(now) if before is None else self._next(now)
            if version is not before:
                heap.trim()         # a rebuild's temporaries must not stay in the RSS
                for listener in self.listeners:
                    try:
                        listener(version)
                    except Exception as e:      # the version is in force here; a listener retries
                        log.error("after publishing version %s: %s", version.version, e)
            return version

    def _first(self, now: datetime) -> Version:
        """After a start: everything is built, and compared with what was served before."""
        store = self.store
        self._load_history()
        last = store.execute("select version, generated_at from policy_versions order by version desc limit 1")
        saved = store.execute("select version, content from policy_latest")
        before = json.loads(saved[0][1]) if saved else {}
        # the rows in policy_entries are the last version's only if it recorded so
        known = bool(last and saved) and saved[0][0] == last[0][0] and before.get("entries") is True
        with store.unit():
            seq, upserted, removed, content = self._diff(now, None, compare=known)
            small = small_sections(store, now, self.requests, self.asn_networks)
            sections = {s for s in SMALL if before.get(s) != small[s]}
            content.update(small)
            if known and not sections and not any(upserted.values()) and not any(removed.values()):
                stored = self.history.get(last[0][0])
                v = self._make(last[0][0], last[0][1], content, seq, has_delta=stored.has_delta if stored else False)
                if stored is not None:
                    v.upserted, v.removed, v.sections = stored.upserted, stored.removed, stored.sections
                self.history[v.version] = self.current = v
                return v
            if not known:
                # nothing to compare with: pollers behind this version must fetch it whole
                self.history.clear()
                sections = set()
            number, upserted, removed = self._steps((last[0][0] if last else 0) + 1, now, upserted, removed)
            v = self._make(number, now, content, seq, has_delta=known,
                           upserted=upserted, removed=removed, sections=sections)
            self._record(v, now)
        # a first build may have written 100,000 rows: on disk they leave DuckDB's memory
        try:
            store.execute("checkpoint")
        except Exception as e:      # the version is stored; only memory is at stake
            log.warning("checkpoint after the first policy build failed: %s", e)
        return self._installed(v)

    def _next(self, now: datetime) -> Version:
        cur, store = self.current, self.store
        touched = {k for (k,) in store.execute(
            "select distinct scope || ':' || value from decisions where seq > ?", [cur.seq])}
        at = now.isoformat()        # ISO strings compare as the times do (microseconds, if any, last)
        if cur.next_expiry is not None and cur.next_expiry <= at:
            touched |= {k for s in ENTRIES for k in expired(cur.content[s], at)}
        small = small_sections(store, now, self.requests, self.asn_networks)
        sections = {s for s in SMALL if cur.content[s] != small[s]}
        if "allowlist" in sections:         # every banned range may be cut differently now
            touched |= {e.key for e in range_entries(cur.content["bans"])} | set(self.carved)
        if self.carved:
            origin = {p: k for k, ps in self.carved.items() for p in ps}
            touched |= {origin[k] for k in touched if k in origin}
            touched |= {p for k in list(touched) for p in self.carved.get(k, ())}
        if not touched and not sections:
            cur.seq = max(cur.seq, store.value("select coalesce(max(seq), 0) from decisions"))
            return cur
        with store.unit():
            seq, upserted, removed, changed = self._diff(now, sorted(touched))
            if not sections and not any(upserted.values()) and not any(removed.values()):
                cur.seq = seq
                return cur
            content = dict(small)
            for s in ENTRIES:
                content[s] = packed(cur.content[s]).changed(removed[s], changed[s])
            # the body is written again where the entries may differ: every key removed or looked
            # at (taken before _steps, which keeps only the published version's share)
            keys = {s: removed[s].keys() | changed[s].keys() for s in ENTRIES}
            number, upserted, removed = self._steps(cur.version + 1, now, upserted, removed)
            v = self._make(number, now, content, seq, has_delta=True, upserted=upserted,
                           removed=removed, sections=sections, before=cur, changed=keys)
            self._record(v, now)
        return self._installed(v)

    def _diff(self, now: datetime, keys: list[str] | None, compare: bool = True) -> tuple[int, dict, dict, dict]:
        """Within a transaction: the entries now in force for `keys` (all when None), which of
        them differ from policy_entries and which stored ones are gone (unless there is nothing
        to `compare` with); policy_entries updated."""
        store = self.store
        seq = store.value("select coalesce(max(seq), 0) from decisions")
        only, params = ("", {"now": now}) if keys is None else (
            ONLY, {"now": now, "keys": keys, "values": [k.partition(":")[2] for k in keys]})
        store.execute(f"create or replace temp table policy_want as {WANT.format(only=only)}", params)
        self._carve(now, keys)
        strings: dict[str, str] = {}
        if keys is None:        # everything in force: packed as it is read, never a dict of a million tuples
            fresh = _packed_want(store)
        else:
            fresh = {s: {} for s in ENTRIES}
            for batch in store.batches(f"select {COLUMNS} from policy_want"):
                for row in batch:
                    fresh[row[0]][row[1]] = _entry(row, strings)
        upserted: dict[str, dict[str, Entry]] = {s: {} for s in ENTRIES}
        removed: dict[str, dict[str, Entry]] = {s: {} for s in ENTRIES}
        where, params = ("true", {}) if keys is None else ("key in (select unnest($keys::varchar[]))", {"keys": keys})
        if compare:
            for batch in store.batches(f"""select section, key from policy_want w
                                           where not exists (select 1 from policy_entries p where {SAME})"""):
                for section, key in batch:
                    upserted[section][key] = fresh[section][key]
            for row in store.execute(f"""
                    select {COLUMNS} from policy_entries p where {where} and not exists (
                        select 1 from policy_want w where w.section = p.section and w.key = p.key)""", params):
                old = (self.current.content[row[0]].get(row[1]) if self.current else None)
                removed[row[0]][row[1]] = old or _entry(row, strings)
        # only what changed is written: a restart with nothing new rewrites no rows
        store.execute(f"""delete from policy_entries p where {where}
                          and not exists (select 1 from policy_want w where {SAME})""", params)
        store.execute(f"""insert into policy_entries select {COLUMNS} from policy_want w
                          where not exists (select 1 from policy_entries p where {SAME})""")
        store.execute("drop table policy_want")
        return seq, upserted, removed, fresh

    def _carve(self, now: datetime, keys: list[str] | None) -> None:
        """Within _diff: the banned ranges in policy_want that contain allowlisted networks are
        replaced by their pieces (carve()); one wholly allowlisted is dropped."""
        store = self.store
        for k in (list(self.carved) if keys is None else keys):
            self.carved.pop(k, None)
        allowed = [n for (v,) in store.execute("""select value from allowlist where kind in ('ip', 'cidr')
                                                  and (until is null or until > ?)""", [now]) if (n := _network(v))]
        if not allowed:
            return
        # an address ban the allowlist covers (made before the entry, or by hand in the store)
        # is never published
        for key, value in store.execute("select key, value from policy_want where section = 'bans' and scope = 'ip'"):
            net = _network(value)
            if net is not None and any(a.version == net.version and net.subnet_of(a) for a in allowed):
                store.execute("delete from policy_want where section = 'bans' and key = ?", [key])
        taken = None
        for key, value in store.execute("""select key, value from policy_want
                                           where section = 'bans' and scope = 'range'"""):
            net = _network(value)
            inside = [a for a in allowed if net is not None and a.version == net.version and a.overlaps(net)]
            if not inside:
                continue
            if taken is None:
                taken = {k for (k,) in store.execute("select key from policy_want where section = 'bans'")}
            pieces = [f"range:{p}" for p in carve(net, inside)]
            fresh = [p for p in pieces if p not in taken]       # a piece banned on its own keeps its own ban
            if fresh:
                store.execute("""
                    insert into policy_want
                    select w.section, p.key, w.id, w.scope, substr(p.key, 7), w.until, w.reason, w.rule, w.effect, w.tier
                    from policy_want w, (select unnest(?::varchar[]) as key) p
                    where w.section = 'bans' and w.key = ?""", [fresh, key])
            store.execute("delete from policy_want where section = 'bans' and key = ?", [key])
            taken |= set(fresh)
            self.carved[key] = pieces

    def _make(self, number: int, at: datetime, content: dict, seq: int, before: Version | None = None,
              changed: dict | None = None, **kw) -> Version:
        body, digest, chunks = write({"version": number, "generated_at": at.isoformat(), "max_age": self.max_age},
                                      content, before.chunks if before else None, changed)
        untils = [u for s in ENTRIES for u in packed(content[s]).untils()]
        # an allowlist entry's end changes the content too
        ends = self.store.value("select min(until) from allowlist where kind in ('ip', 'cidr') and until > ?", [at])
        if ends is not None:
            untils.append(ends.isoformat())
        return Version(number, at, content, body, f'"{number}"', digest=digest, seq=seq,
                       next_expiry=min(untils) if untils else None, chunks=chunks, **kw)

    def _steps(self, number: int, now: datetime, upserted: dict, removed: dict) -> tuple[int, dict, dict]:
        """A difference of more than DELTA_STEP entries is recorded as several versions of at
        most that many each: one stored delta of 90,000 bans is a JSON value of 22 MB, which
        DuckDB could not allocate at serve's memory limit (and serve could not start). The
        steps are numbered before the version that is published (they are never current, only
        links in pollers' chains); returns the published version's number and its own share."""
        changes = [(kind, s, k, e) for kind, d in (("removed", removed), ("upserted", upserted))
                   for s in ENTRIES for k, e in d.get(s, {}).items()]
        while len(changes) > DELTA_STEP:
            part, changes = changes[:DELTA_STEP], changes[DELTA_STEP:]
            step = Version(number, now, {}, b"", f'"{number}"', *(
                {s: {k: e for kind2, s2, k, e in part if kind2 == kind and s2 == s} for s in ENTRIES}
                for kind in ("upserted", "removed")))
            self._record(step, now)
            self.history[number] = step
            number += 1
        rest = [{s: {k: e for kind2, s2, k, e in changes if kind2 == kind and s2 == s} for s in ENTRIES}
                for kind in ("upserted", "removed")]
        return number, rest[0], rest[1]

    def _record(self, v: Version, now: datetime) -> None:
        """The version's difference and, unless it is one of _steps', its small sections, in the
        store (inside the transaction)."""
        store = self.store
        delta = {"upserted": {s: {k: e.as_dict() for k, e in v.upserted.get(s, {}).items()} for s in ENTRIES},
                 "removed": {s: {k: e.as_dict() for k, e in v.removed.get(s, {}).items()} for s in ENTRIES},
                 "sections": sorted(v.sections), "complete": v.has_delta}
        store.execute("insert into policy_versions values (?, ?, ?, ?)", [v.version, now, v.digest, json.dumps(delta)])
        store.execute("delete from policy_versions where version <= ?", [v.version - HISTORY])
        if not v.content:
            return
        store.execute("delete from policy_latest")
        latest = {s: v.content[s] for s in SMALL} | {"entries": True}
        store.execute("insert into policy_latest values (?, ?)", [v.version, json.dumps(latest)])

    def _installed(self, version: Version) -> Version:
        previous = self.current
        self.history[version.version] = version     # before it is current: a poller may ask at once
        self.current = version
        if previous is not None:
            # history keeps only differences: one full copy, not thousands. A copy without
            # the content, so a request still reading the old version is not disturbed.
            self.history[previous.version] = replace(previous, content={}, body=b"", cache={}, chunks={})
        for old in [n for n in self.history if n <= version.version - HISTORY]:
            del self.history[old]
        return version

    def refresh(self) -> Version:
        """The periodic job: between changes made through the API or by detection (which
        publish at once), the policy only changes when something in it expires."""
        cur = self.current
        if self.asn_networks is not None and self.asn_networks.changed():
            self.asn_networks.load()     # a new asn_db file, read outside the lock: 6 s for GeoLite2-ASN's size
            return self.publish()
        if cur is not None and (cur.next_expiry is None or self.clock().isoformat() < cur.next_expiry):
            return cur
        return self.publish()

    def _load_history(self) -> None:
        """The stored differences of recent versions (after a restart)."""
        def entries(d: dict) -> dict:
            return {s: {k: Entry.of(e) for k, e in d.get(s, {}).items()} for s in ENTRIES}
        # read a few MB of deltas at a time: all of them in one result could be more than
        # DuckDB may allocate at serve's memory limit (2,000 versions, or a few large ones)
        sizes = self.store.execute("""select version, strlen(delta::varchar) from policy_versions
                                      order by version desc limit ?""", [HISTORY])
        groups, size = [[]], 0
        for number, n in sizes:
            if size + n > HISTORY_READ and groups[-1]:
                groups.append([])
                size = 0
            groups[-1].append(number)
            size += n
        for group in groups:
            for number, at, delta in self.store.execute(
                    "select version, generated_at, delta from policy_versions where version between ? and ?",
                    [min(group, default=0), max(group, default=-1)]):
                d = json.loads(delta)
                self.history[number] = Version(number, at, {}, b"", f'"{number}"', entries(d["upserted"]),
                                               entries(d["removed"]), set(d["sections"]),
                                               has_delta=d.get("complete", True))

    def _chain(self, since: int, cur: Version) -> list[Version] | None:
        """The versions after ``since`` up to ``cur``, each with its difference; None when one is
        missing (too old, or built with nothing to compare with)."""
        if since > cur.version or since < cur.version - HISTORY:
            return None
        chain = [self.history.get(n) for n in range(since + 1, cur.version + 1)]     # one look each: a publish may prune
        return None if any(v is None or not v.has_delta for v in chain) else chain

    def delta_size(self, since: int) -> int:
        """How many entries changed after version ``since`` (0 when unknown): cheap, no delta built."""
        chain = self._chain(since, self.current)
        return _size(chain) if chain else 0

    def changes(self, since: int, limit: float | None = None) -> dict | None:
        """What changed after version ``since``; None when that version is no longer known, or
        when the changes number more than ``limit`` times the entries in force (at least 1000)."""
        cur = self.current
        if since == cur.version:
            return {"since": since, "version": cur.version, "upsert": {"bans": [], "assignments": []},
                    "remove": {"bans": [], "assignments": []}, "sections": {}}
        chain = self._chain(since, cur)
        if chain is None:
            return None
        if limit is not None and _size(chain) > max(1000, limit * sum(len(cur.content[s]) for s in ENTRIES)):
            return None
        upsert: dict[str, dict] = {"bans": {}, "assignments": {}}
        remove: dict[str, dict] = {"bans": {}, "assignments": {}}
        sections: set[str] = set()
        for v in chain:
            for s in upsert:
                for k, e in v.removed.get(s, {}).items():
                    upsert[s].pop(k, None)
                    remove[s][k] = e
                for k, e in v.upserted.get(s, {}).items():
                    remove[s].pop(k, None)
                    upsert[s][k] = e
            sections |= v.sections
        return {"since": since, "version": cur.version,
                "upsert": {s: [e.as_dict() for e in upsert[s].values()] for s in upsert},
                "remove": {s: [{"key": k, "id": e.id, "scope": e.scope, "value": e.value, "until": e.until,
                                "rule": e.rule} for k, e in remove[s].items()] for s in remove},
                "sections": {s: cur.content[s] for s in sorted(sections)}}

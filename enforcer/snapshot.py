"""The published policy: immutable, numbered snapshots built from the decisions, tiers and
image lists, served from memory; each new version keeps its difference from the previous one
so pollers (our proxies, CrowdSec bouncers) can ask for what changed."""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable

HISTORY = 2000          # versions whose changes are kept; older `since` values get 410

try:        # glibc keeps freed memory; a rebuild's temporaries would otherwise stay in the RSS
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):
    _trim = None


def build(store, now: datetime) -> dict:
    """The policy content at wall-clock ``now`` (decisions in force, not simulated)."""
    tiers = {r[0]: dict(zip(["requests_per_minute", "concurrent", "blob_bytes_per_second", "window_bytes",
                              "window_seconds"], r[1:]))
             for r in store.execute("select * from tiers order by name")}
    kv = dict(store.execute("select key, value from kv"))
    bans, assignments = {}, {}
    # Many decisions share a rule, a reason or an expiry: one string object each keeps 100,000
    # entries some 15 MB smaller.
    shared: dict[str, str] = {}
    rows = (r for batch in store.batches("""
            select id, scope, value, effect, tier, rule, reason, until from decisions
            where revoked_at is null and not simulated and until > ? order by until""", [now]) for r in batch)
    for id_, scope, value, effect, tier, rule, reason, until in rows:
        until = until.isoformat()
        entry = {"id": id_, "scope": scope, "value": value, "until": shared.setdefault(until, until),
                 "reason": shared.setdefault(reason, reason), "rule": shared.setdefault(rule or "manual", rule or "manual")}
        if effect == "ban":
            bans[f"{scope}:{value}"] = entry                      # one per entity: the longest
        else:
            key = f"{scope}:{value}"
            # a throttle beats a boost for the same entity; among equals, the longest
            if key not in assignments or assignments[key]["effect"] == "boost" or effect == "throttle":
                assignments[key] = {**entry, "effect": effect, "tier": tier}
    images: dict[str, list[str]] = {"allowed": [], "unlimited": [], "blocked": []}
    for lst, pattern in store.execute("select list, pattern from image_lists"):
        images[lst].append(pattern)
    for lst in images:          # CRProxy refuses a list that is not sorted in byte order
        images[lst] = sorted(set(images[lst]), key=lambda p: p.encode())
    allowed = sorted(v for (v,) in store.execute("""
        select value from allowlist where kind in ('ip', 'cidr') and (until is null or until > ?)""", [now]))
    return {"tiers": tiers, "allowlist": allowed,
            "default_tiers": {"anonymous": kv.get("anonymous_tier", "anonymous"),
                              "authenticated": kv.get("authenticated_tier", "authenticated")},
            "bans": dict(sorted(bans.items())), "assignments": dict(sorted(assignments.items())),
            "images": images}


def serialize(content: dict) -> bytes:
    """The content as JSON, entry by entry: one json.dumps of 100,000 entries would hold the
    interpreter for a quarter of a second, and the API's requests with it."""
    parts = []
    for section in sorted(content):
        value = content[section]
        if section in ("bans", "assignments"):
            inner = ",".join(f"{json.dumps(k)}:{json.dumps(e, sort_keys=True)}" for k, e in value.items())
            parts.append(f'"{section}":{{{inner}}}')
        else:
            parts.append(f'"{section}":{json.dumps(value, sort_keys=True)}')
    return ("{" + ",".join(parts) + "}").encode()



@dataclass
class Version:
    version: int
    generated_at: datetime
    content: dict
    body: bytes                 # the JSON of GET /v1/policy
    etag: str
    # what changed from the previous version
    upserted: dict = field(default_factory=dict)      # "bans"/"assignments" -> {key: entry}
    removed: dict = field(default_factory=dict)       # "bans"/"assignments" -> {key: entry}
    sections: set = field(default_factory=set)        # tiers, default_tiers, images when they changed
    digest: str = ""
    next_expiry: datetime | None = None               # when the content changes by itself
    seq: int = 0                                      # the decisions' change number it was built at
    has_delta: bool = True                            # False: built with nothing to compare with
    cache: dict = field(default_factory=dict)         # derived forms, built once per version


class Publisher:
    """Builds and numbers snapshots; thread-safe; versions only grow, across restarts too."""

    def __init__(self, store, lock: threading.RLock, clock: Callable[[], datetime], max_age: int):
        self.store, self.lock, self.clock, self.max_age = store, lock, clock, max_age
        self.history: dict[int, Version] = {}
        self.current: Version | None = None
        self.last_ok: datetime | None = None
        self.last_error: str | None = None
        self.published = 0

    def publish(self) -> Version:
        with self.lock:
            now = self.clock()
            seq = self.store.value("select coalesce(max(seq), 0) from decisions")
            content = build(self.store, now)
            serialized = serialize(content)
            d = hashlib.sha256(serialized).hexdigest()
            if self.current is not None and self.current.digest == d:
                self.current.seq = seq
                self.last_ok = now
                return self.current
            if self.current is None:
                self._load_history()
                row = self.store.execute("select version, generated_at, digest from policy_versions "
                                         "order by version desc limit 1")
                if row and row[0][2] == d:
                    self.current = self._make(row[0][0], row[0][1], content, None, d, seq, serialized)
                    stored = self.history[row[0][0]]
                    self.current.upserted, self.current.removed = stored.upserted, stored.removed
                    self.current.sections, self.current.has_delta = stored.sections, stored.has_delta
                    self.history[self.current.version] = self.current
                    self.last_ok = now
                    return self.current
                last = row[0][0] if row else 0
                # the content we served before the restart, to tell what changed since
                saved = self.store.execute("select version, content from policy_latest")
                previous = (Version(last, now, json.loads(saved[0][1]), b"", f'"{last}"')
                            if row and saved and saved[0][0] == last else None)
            else:
                last, previous = self.current.version, self.current
            version = self._make(last + 1, now, content, previous, d, seq, serialized)
            if previous is None and last:
                # nothing to compare with: pollers behind this version must fetch it whole
                self.history.clear()
            delta = {"upserted": version.upserted, "removed": version.removed, "sections": sorted(version.sections),
                     "complete": version.has_delta}
            self.store.execute("insert into policy_versions values (?, ?, ?, ?)",
                               [version.version, now, d, json.dumps(delta)])
            self.store.execute("delete from policy_versions where version <= ?", [version.version - HISTORY])
            self.store.execute("delete from policy_latest")
            self.store.execute("insert into policy_latest values (?, ?)", [version.version, serialized.decode()])
            previous = self.current
            self.current = version
            self.history[version.version] = version
            if previous is not None:
                # history keeps only differences: one full copy, not thousands. A copy without
                # the content, so a request still reading the old version is not disturbed.
                self.history[previous.version] = replace(previous, content={}, body=b"", cache={})
            for old in [v for v in self.history if v <= version.version - HISTORY]:
                del self.history[old]
            self.last_ok = now
            self.published += 1
            if _trim is not None:
                _trim(0)
            return version

    def publish_if_changed(self) -> Version:
        """After a detection pass: rebuild only if a decision changed (or one expired)."""
        with self.lock:
            seq = self.store.value("select coalesce(max(seq), 0) from decisions")
        if self.current is not None and seq == self.current.seq:
            return self.refresh()
        return self.publish()

    def refresh(self) -> Version:
        """The periodic job: between changes made through the API or by detection (which
        publish at once), the policy only changes when something in it expires. Rebuilding
        100,000 entries costs a quarter of a second of the interpreter, so only then."""
        cur = self.current
        if cur is not None and (cur.next_expiry is None or self.clock() < cur.next_expiry):
            self.last_ok = self.clock()
            return cur
        return self.publish()

    def _load_history(self) -> None:
        """The stored differences of recent versions (after a restart)."""
        for number, at, delta in self.store.execute(
                "select version, generated_at, delta from policy_versions order by version desc limit ?", [HISTORY]):
            d = json.loads(delta)
            self.history[number] = Version(number, at, {}, b"", f'"{number}"', d["upserted"], d["removed"],
                                           set(d["sections"]), has_delta=d.get("complete", True))

    def _make(self, number: int, at: datetime, content: dict, previous: Version | None, d: str, seq: int,
              serialized: bytes) -> Version:
        head = json.dumps({"version": number, "generated_at": at.isoformat(), "max_age": self.max_age})
        body = head[:-1].encode() + b"," + serialized[1:]
        untils = [e["until"] for section in ("bans", "assignments") for e in content[section].values()]
        v = Version(number, at, content, body, f'"{number}"', digest=d, seq=seq,
                    next_expiry=datetime.fromisoformat(min(untils)) if untils else None)
        v.has_delta = previous is not None
        if previous is not None:
            for section in ("bans", "assignments"):
                old, new = previous.content[section], content[section]
                v.upserted[section] = {k: e for k, e in new.items() if old.get(k) != e}
                v.removed[section] = {k: e for k, e in old.items() if k not in new}
            v.sections = {s for s in ("tiers", "default_tiers", "images", "allowlist")
                          if previous.content.get(s) != content[s]}
        return v

    def changes(self, since: int) -> dict | None:
        """What changed after version ``since``; None when that version is no longer known."""
        cur = self.current
        if since == cur.version:
            return {"since": since, "version": cur.version, "upsert": {"bans": [], "assignments": []},
                    "remove": {"bans": [], "assignments": []}, "sections": {}}
        if since > cur.version or since < cur.version - HISTORY:
            return None
        if any(n not in self.history or not self.history[n].has_delta for n in range(since + 1, cur.version + 1)):
            return None
        upsert: dict[str, dict] = {"bans": {}, "assignments": {}}
        remove: dict[str, dict] = {"bans": {}, "assignments": {}}
        sections: set[str] = set()
        for n in range(since + 1, cur.version + 1):
            v = self.history[n]
            for s in upsert:
                for k, e in v.removed.get(s, {}).items():
                    upsert[s].pop(k, None)
                    remove[s][k] = e
                for k, e in v.upserted.get(s, {}).items():
                    remove[s].pop(k, None)
                    upsert[s][k] = e
            sections |= v.sections
        return {"since": since, "version": cur.version,
                "upsert": {s: list(upsert[s].values()) for s in upsert},
                "remove": {s: [{"key": k, "id": e["id"], "scope": e["scope"], "value": e["value"], "until": e["until"],
                                "rule": e["rule"]} for k, e in remove[s].items()] for s in remove},
                "sections": {s: cur.content[s] for s in sorted(sections)}}

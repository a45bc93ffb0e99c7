"""API keys with roles. A key is shown once; only its SHA-256 is stored. Keys are random
(256 bits), so a plain hash is enough; comparisons run in constant time over every key."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime

ROLES = ("proxy", "viewer", "admin")


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    role: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def create_key(store, name: str, role: str, now: datetime) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not KEY_NAME.match(name or ""):
        raise ValueError(f"a key name is 1 to 64 letters, digits, '.', '_', '@' or '-': {name!r}")
    if store.value("select count(*) from api_keys where name = ?", [name]):
        raise ValueError(f"a key named {name!r} exists already")
    key = "pw_" + secrets.token_urlsafe(32)
    store.execute("insert into api_keys (name, role, key_hash, created_at) values (?, ?, ?, ?)",
                  [name, role, _hash(key), now])
    return key


def replace_key(store, name: str, role: str, now: datetime) -> str:
    """A new key under ``name``: created, or the old one's hash replaced (and un-revoked). Only
    hashes are kept, so a process that needs a key it no longer has (the dashboard that
    `pullwarden up` starts) can only be given a new one."""
    if not store.value("select count(*) from api_keys where name = ?", [name]):
        return create_key(store, name, role, now)
    key = "pw_" + secrets.token_urlsafe(32)
    store.execute("update api_keys set role = ?, key_hash = ?, created_at = ?, revoked_at = null where name = ?",
                  [role, _hash(key), now, name])
    return key


def list_keys(store) -> list[dict]:
    """Every key, never the key itself."""
    return store.records("select id, name, role, created_at, revoked_at from api_keys order by name")


def revoke_key(store, name: str, now: datetime) -> str:
    """Revoke an active key at once; returns its role. The last active admin key stays: without
    it nobody could change anything through the API while the server runs."""
    row = store.execute("select role from api_keys where name = ? and revoked_at is null", [name])
    if not row:
        raise LookupError(f"no active key named {name!r}")
    if row[0][0] == "admin" and store.value(
            "select count(*) from api_keys where role = 'admin' and revoked_at is null") == 1:
        raise ValueError(f"{name!r} is the last admin key: create another admin key first")
    store.execute("update api_keys set revoked_at = ? where name = ?", [now, name])
    return row[0][0]


class KeyRing:
    """The active keys, cached; reload() after a key is created or revoked."""

    def __init__(self, store, lock):
        self.store, self.lock = store, lock
        self.keys: list[tuple[str, Principal]] = []
        self.reload()

    def reload(self) -> None:
        with self.lock:
            rows = self.store.execute("select id, name, role, key_hash from api_keys where revoked_at is null")
        self.keys = [(h, Principal(i, n, r)) for i, n, r, h in rows]

    def check(self, key: str | None) -> Principal | None:
        if not key:
            return None
        digest = _hash(key)
        found = None
        for h, who in self.keys:                 # no early exit: the time does not tell which key
            if hmac.compare_digest(h, digest):
                found = who
        return found


class Failures:
    """Repeated bad keys from one address are answered more and more slowly. The table holds
    the addresses that failed within the last WINDOW, at most MAX_ADDRESSES of them (the least
    recently failing go first), and at most SATURATED times per address (by then the delay is
    MAX_DELAY): without a bound, every address that ever sent a bad key stayed, ~500 bytes each."""

    FREE, WINDOW, MAX_DELAY = 5, 60.0, 5.0
    MAX_ADDRESSES = 10_000
    SATURATED = FREE + 8                # 0.1 s doubled 7 times is over MAX_DELAY

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seen: OrderedDict[str, deque] = OrderedDict()     # least recently failing first
        self.lock = threading.Lock()

    def record(self, who: str) -> float:
        """Count a failure; returns the delay to apply before answering. IPv6 addresses count
        by /64, what one host is usually given (Docker Hub counts pulls the same way): one per
        address would let a host try 2**64 times for free."""
        if ":" in who:
            try:
                who = str(ipaddress.IPv6Network(f"{who}/64", strict=False))
            except ValueError:
                pass
        now = self.clock()
        with self.lock:
            q = self.seen.pop(who, None) or deque(maxlen=self.SATURATED)
            self.seen[who] = q
            q.append(now)
            while q[0] < now - self.WINDOW:
                q.popleft()
            n = len(q)
            while len(self.seen) > self.MAX_ADDRESSES or self.seen[next(iter(self.seen))][-1] < now - self.WINDOW:
                self.seen.popitem(last=False)
        return 0.0 if n <= self.FREE else min(self.MAX_DELAY, 0.1 * 2 ** (n - self.FREE - 1))

"""What the API and the scheduled jobs share inside one `pullwarden serve` process."""
from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from core.clock import utcnow  # noqa: F401  (the server's clock: the wall clock; routes import it from here)
from enforcer.asnets import ASNetworks
from enforcer.keys import Failures, KeyRing
from enforcer.snapshot import Publisher, requests_section


JOB_NICE = 10       # added to the nice value of the threads that run the jobs


def lower_priority() -> None:
    """The jobs' threads (and the reader threads they start, which inherit it) give way to the
    API's: on a small machine an ingest run or a detection pass busy on every core would
    otherwise sit in front of each poll, which must be answered in milliseconds."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < JOB_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, JOB_NICE)
    except (OSError, AttributeError):       # not Linux, or not allowed: run at the same priority
        pass


@dataclass
class Passes:
    """What serve's detection passes have judged: where the next fresh pass starts, and what
    /metrics says about the last pass. ``upto`` is None until the first full pass after a
    start (only a full pass knows that everything before it was judged)."""
    upto: int | None = None             # events' seq the last pass judged up to
    objects_upto: int = -1              # object_events' seq the last pass judged up to
    full_at: datetime | None = None     # `now` of the last full pass
    rules: str | None = None            # the rules of the last full pass (a fresh pass needs the same)
    newest: datetime | None = None      # the newest event time the last pass judged
    last: dict = field(default_factory=dict)    # the last pass: kind, now, seconds, published_at, lag
    read: tuple | None = None           # (the rule files' stamp, the rules read from them)

    def judged(self, fresh: bool, now: datetime, upto: int, newest: datetime | None, rules: str,
               seconds: float, objects_upto: int = -1) -> None:
        """A pass at ``now`` judged the events up to seq ``upto``, the newest of them at ``newest``,
        and the object store's downloads up to seq ``objects_upto``."""
        self.newest = max(filter(None, (self.newest, newest)), default=None)
        self.upto, self.objects_upto = upto, objects_upto
        if not fresh:
            self.full_at, self.rules = now, rules
        self.last = {"kind": "fresh" if fresh else "full", "now": now, "seconds": seconds}

    def hour_turned(self, now: datetime) -> bool:
        """An hour began since the last pass: every window lost its oldest hour."""
        last = self.last.get("now")
        return last is not None and last.replace(minute=0, second=0, microsecond=0) < now.replace(
            minute=0, second=0, microsecond=0)

    def published(self, at: datetime) -> None:
        """Its decisions are in the policy since ``at``."""
        lag = (at - self.newest).total_seconds() if self.newest is not None else None
        self.last.update(published_at=at, lag=lag)


class Gate:
    """Many readers or one writer; a waiting writer goes first, so a steady stream of readers
    cannot put a checkpoint off for ever."""

    def __init__(self):
        self.cond = threading.Condition()
        self.readers = 0
        self.writing = False
        self.waiting = 0

    @contextmanager
    def shared(self):
        with self.cond:
            self.cond.wait_for(lambda: not self.writing and not self.waiting)
            self.readers += 1
        try:
            yield
        finally:
            with self.cond:
                self.readers -= 1
                self.cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self.cond:
            self.waiting += 1
            self.cond.wait_for(lambda: not self.writing and not self.readers)
            self.waiting -= 1
            self.writing = True
        try:
            yield
        finally:
            with self.cond:
                self.writing = False
                self.cond.notify_all()


class Memory:
    """DuckDB's memory limit is one for the whole database, every connection: serve keeps it at
    serve_memory_mb, and work that needs more (a detection pass, a step of a backtest: their
    feature queries take 60-120 MB at one thread, set by the query's shape more than by the
    data) asks for it while it runs. Two at once get the sum, each its own room."""

    def __init__(self, base_mb: int):
        self.base = int(base_mb)
        self.held: list[int] = []
        self.lock = threading.Lock()

    @contextmanager
    def at_least(self, store, mb: int):
        """The limit is at least ``mb`` (set through ``store``, any of serve's connections) until
        the block ends."""
        with self.lock:
            self.held.append(int(mb))
            self._set(store)
        try:
            yield
        finally:
            with self.lock:
                self.held.remove(int(mb))
                self._set(store)

    def _set(self, store) -> None:
        store.execute(f"set memory_limit = '{max(self.base, sum(self.held))}MB'")


@dataclass
class Services:
    store: object
    settings: object
    clock: Callable[[], datetime] = utcnow
    lock: threading.RLock = field(default_factory=threading.RLock)
    publisher: Publisher = None
    keys: KeyRing = None
    failures: Failures = field(default_factory=Failures)
    polls: Counter = field(default_factory=Counter)         # key name -> policy/stream polls
    jobs: dict = field(default_factory=dict)                # job name -> {"ok": time, "error": text}
    cursors: dict = field(default_factory=dict)             # key id -> CrowdSec cursor version
    cursor_at: dict = field(default_factory=dict)           # key id -> when that version was made
    backlog: bool = False                                   # ingest is reading a backlog in slices
    catching_up: bool = False                               # ...far behind: larger chunks, every core (catchup.py)
    new_events: threading.Event = field(default_factory=threading.Event)  # ingest stored some: a fresh pass is due
    passes: Passes = field(default_factory=Passes)                        # what detection judged, for the next pass
    stopping: threading.Event = field(default_factory=threading.Event)    # the server is shutting down
    gate: "Gate" = field(default_factory=lambda: Gate())                 # analytics reads vs checkpoints
    reads: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(1))  # one at a time
    analytics_pool: ThreadPoolExecutor = None                               # see read()
    memory: Memory = None                                                   # DuckDB's memory limit

    def __post_init__(self):
        self.memory = self.memory or Memory(self.settings.serve_memory_mb)
        self.analytics_pool = self.analytics_pool or ThreadPoolExecutor(1, "analytics", initializer=lower_priority)
        self.publisher = self.publisher or Publisher(self.store, self.lock, self.clock,
                                                     self.settings.policy_max_age, requests_section(self.settings))
        if self.settings.asn_db and self.publisher.asn_networks is None:     # AS bans as networks, for every proxy
            self.publisher.asn_networks = ASNetworks(self.settings.asn_db)
        self.keys = self.keys or KeyRing(self.store, self.lock)
        with self.lock:
            for key_id, version, at in self.store.execute("select key_id, version, polled_at from bouncer_cursors"):
                self.cursors[key_id], self.cursor_at[key_id] = version, at
        self.publisher.publish()

    @contextmanager
    def analytics(self):
        """A store for the dashboard's and the reports' reads over the roll-ups: a connection of
        its own, one such read at a time, and never during a checkpoint. DuckDB's memory limit
        is one budget for the whole database: with 5 dashboard users' month-wide aggregates
        beside an ingest run, 61 of 64 MB were pinned, the ingest's automatic checkpoint could
        not pin a block and DuckDB invalidated the database until a restart. Serve therefore
        checkpoints only by itself (``checkpoint()``), when no such read runs; a read waits for
        a checkpoint at most, never for an ingest run, and the proxies' polls (answered from
        memory) never wait for either."""
        with self.reads, self.gate.shared(), self.store.reading() as store:
            yield store

    def read(self, fn):
        """``fn(store)`` inside ``analytics()`` on the analytics thread, which runs at the jobs'
        lower CPU priority: on a small machine a dashboard's month-wide aggregate would
        otherwise take the core that the proxies' polls are answered on."""
        return self.analytics_pool.submit(self._read, fn).result()

    def _read(self, fn):
        with self.analytics() as store:
            return fn(store)

    def checkpoint(self) -> None:
        """Write the WAL into the file, with no analytics read running (see ``analytics``)."""
        with self.gate.exclusive():
            self.store.execute("checkpoint")

    def save_cursors(self) -> None:
        """Each key's cursor, and as its time (polled_at) when the version it was given was made,
        no later: a bouncer too far behind for the kept history is told to delete what ended
        after it (routes/crowdsec.py)."""
        with self.lock, self.store.unit():
            for key_id, version in list(self.cursors.items()):
                self.store.execute("insert or replace into bouncer_cursors values (?, ?, ?)",
                                   [key_id, version, self.cursor_at.get(key_id) or self.clock()])

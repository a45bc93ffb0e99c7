"""What the API and the scheduled jobs share inside one `pullwarden serve` process."""
from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from core.clock import utcnow  # noqa: F401  (the server's clock: the wall clock; routes import it from here)
from enforcer.keys import Failures, KeyRing
from enforcer.snapshot import Publisher




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
    backlog: bool = False                                   # ingest is reading a backlog in slices
    stopping: threading.Event = field(default_factory=threading.Event)    # the server is shutting down

    def __post_init__(self):
        self.publisher = self.publisher or Publisher(self.store, self.lock, self.clock,
                                                     self.settings.policy_max_age)
        self.keys = self.keys or KeyRing(self.store, self.lock)
        with self.lock:
            self.cursors.update(dict(self.store.execute("select key_id, version from bouncer_cursors")))
        self.publisher.publish()

    @contextmanager
    def analytics(self):
        """A store for the dashboard's and the reports' reads over the roll-ups: its own
        connection, and the store's lock held meanwhile. DuckDB's memory limit is one budget for
        the whole database: a month-wide aggregate running beside an ingest run took the buffer
        pool (61 of 64 MB pinned), the ingest's automatic checkpoint could not pin a block, and
        DuckDB invalidated the database for good. Held, such a read waits for an ingest slice
        (1-2 s at most) and no job writes while it runs; the proxies' polls, answered from
        memory, never wait for it. Lookups of one row (/v1/check, /metrics) go without."""
        with self.lock, self.store.reading() as store:
            yield store

    def save_cursors(self) -> None:
        with self.lock:
            for key_id, version in list(self.cursors.items()):
                self.store.execute("insert or replace into bouncer_cursors values (?, ?, ?)",
                                   [key_id, version, self.clock()])

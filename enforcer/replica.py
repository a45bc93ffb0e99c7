"""Read-only replicas: several `serve` processes answer proxies from the policy one writer
publishes, without DuckDB.

The writer (`publish_dir` set) writes each policy version into a shared folder as the exact
bytes of GET /v1/policy (gzipped), `policy-<version>.json.gz`, and then `current.json`, which
names that file, the writer's URL and the active keys' SHA-256 hashes. Each file is written to
a temporary name and renamed, so a reader sees a whole file or the one before. The writer
rewrites current.json at least every HEARTBEAT seconds, so a replica can tell a quiet writer
from a gone one.

A replica (`serve --replica-of DIR`) polls current.json every POLL seconds and installs each new
version: the same body and ETags as the writer, /v1/check, /v1/policy/changes (from the
versions it has seen: a version it skipped answers 410 and the agent fetches the whole policy)
and CrowdSec's stream (cursors per key, kept by each replica). /v1/admin/* and /v1/stats/*
answer 409 naming the writer. /v1/check looks AS numbers up in `asn_db` (the writer's come
from the ingested ip_info), so a replica without one cannot apply AS-number decisions and says
so."""
from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from core.clock import utcnow
from enforcer.deps import AnyKey, CrowdSecForbidden, ServicesDep, crowdsec_forbidden
from enforcer.keys import Failures, KeyRing, Principal
from enforcer.snapshot import ENTRIES, HISTORY, REQUESTS, SMALL, Entry, Publisher, Version

log = logging.getLogger("pullwarden.replica")
MANIFEST = "current.json"
KEEP = 4                # policy files kept in the folder: a replica reading an older one still finds it
HEARTBEAT = 30.0        # seconds between rewrites of current.json by a writer with nothing new
POLL = 0.5              # seconds between a replica's looks at current.json
SILENT = 4 * HEARTBEAT  # a writer not heard of for this long makes a replica's /healthz degraded


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class PolicyDir:
    """The writer's side: each published version and the active keys into ``folder``."""

    def __init__(self, folder: str | Path, writer_url: str, keyring: KeyRing, clock: Callable[[], datetime] = utcnow):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer_url, self.keyring, self.clock = writer_url, keyring, clock
        self.lock = threading.Lock()
        self.version: Version | None = None
        self.dirty = False
        self.keys: tuple = ()
        self.written = 0.0

    def _keys(self) -> tuple:
        return tuple(sorted((h, who.id, who.name, who.role) for h, who in self.keyring.keys))

    def write(self, version: Version) -> None:
        """A new version (Publisher's listener): its body, then the manifest naming it. One that
        fails (a full disk, a folder gone) is written again by the next tick()."""
        with self.lock:
            self.version, self.dirty = version, True
            self._write()

    def _write(self) -> None:
        name = f"policy-{self.version.version:012d}.json.gz"
        if not (self.folder / name).exists():
            _atomic_write(self.folder / name, self.version.body)
        self._manifest(name)
        self.dirty = False
        for old in sorted(self.folder.glob("policy-*.json.gz"))[:-KEEP]:
            old.unlink(missing_ok=True)

    def tick(self) -> None:
        """A scheduled job: a version whose write failed is written again, a key created or
        revoked reaches the replicas within a second, and the manifest is rewritten every
        HEARTBEAT seconds even when nothing changed."""
        with self.lock:
            if self.version is None:
                return
            if self.dirty:
                self._write()
            elif self._keys() != self.keys or time.monotonic() - self.written > HEARTBEAT:
                self._manifest(f"policy-{self.version.version:012d}.json.gz")

    def _manifest(self, name: str) -> None:
        self.keys = self._keys()
        v = self.version
        doc = {"format": 1, "version": v.version, "generated_at": v.generated_at.isoformat(), "policy": name,
               "writer": self.writer_url, "written_at": self.clock().isoformat(),
               "keys": [{"key_hash": h, "id": i, "name": n, "role": r} for h, i, n, r in self.keys]}
        _atomic_write(self.folder / MANIFEST, json.dumps(doc, indent=1).encode())
        self.written = time.monotonic()


def attach(services, scheduler, cfg) -> PolicyDir:
    """In the writer's serve: publish every version into ``cfg.publish_dir`` from now on."""
    url = cfg.api_url or f"http://{cfg.host}:{cfg.port}"
    sink = PolicyDir(cfg.publish_dir, url, services.keys, services.clock)
    with services.publisher.lock:
        services.publisher.listeners.append(sink.write)
        sink.write(services.publisher.current)
    scheduler.add_job(sink.tick, "interval", seconds=1, id="replica-manifest", name="replica-manifest")
    return sink


class ReplicaKeys(KeyRing):
    """The writer's active keys, as its manifest lists them (hashes only)."""

    def __init__(self):
        self.keys: list[tuple[str, Principal]] = []

    def reload(self) -> None:      # nothing to read: set() is called with each manifest
        pass

    def set(self, rows: list[dict]) -> None:
        self.keys = [(r["key_hash"], Principal(r["id"], r["name"], r["role"])) for r in rows]


def content_of(policy: dict) -> dict:
    """A Version's content from the JSON of GET /v1/policy."""
    # a writer older than a section gives its default
    default = {"requests": REQUESTS, "asn_networks": {}}
    content = {s: policy.get(s, default[s]) if s in default else policy[s] for s in SMALL}
    for s in ENTRIES:
        content[s] = {k: Entry.of(d) for k, d in policy[s].items()}
    return content


class ReplicaPublisher(Publisher):
    """The writer's versions, read from the folder; its history links each version to the one this
    replica saw before it, so a delta is given only over versions it has seen."""

    def __init__(self, folder: str | Path, clock: Callable[[], datetime], max_age: int, keys: ReplicaKeys):
        super().__init__(None, threading.RLock(), clock, max_age)
        self.folder, self.keyring = Path(folder), keys
        self.base: dict[int, int] = {}          # version -> the version this replica held before it
        self.manifest: dict = {}
        self.loaded_at: datetime | None = None
        self.error: str | None = None

    def load(self) -> bool:
        """Look at the folder; True when a new version was installed. A half-synced folder
        (manifest ahead of its policy file) is tried again at the next look."""
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
            self.keyring.set(manifest["keys"])
            self.manifest = manifest
            if self.current is not None and manifest["version"] == self.current.version:
                self.error = None
                return False
            if self.current is not None and manifest["version"] < self.current.version:
                raise ValueError(f"the writer went back from version {self.current.version} to "
                                 f"{manifest['version']}: another writer, or a restored folder")
            body = (self.folder / manifest["policy"]).read_bytes()
            policy = json.loads(gzip.decompress(body))
        except (OSError, ValueError, KeyError, EOFError) as e:
            self.error = f"{self.folder}: {e}"
            return False
        with self.lock:
            self._install(policy, body)
        self.error = None
        return True

    def _install(self, policy: dict, body: bytes) -> None:
        number = policy["version"]
        content = content_of(policy)
        before = self.current
        upserted: dict = {s: {} for s in ENTRIES}
        removed: dict = {s: {} for s in ENTRIES}
        sections: set = set()
        if before is not None:
            for s in ENTRIES:
                old, new = before.content[s], content[s]
                upserted[s] = {k: e for k, e in new.items() if old.get(k) != e}
                removed[s] = {k: e for k, e in old.items() if k not in new}
            sections = {s for s in SMALL if before.content[s] != content[s]}
            self.base[number] = before.version
        v = Version(number, datetime.fromisoformat(policy["generated_at"]), content, body, f'"{number}"',
                    upserted, removed, sections, has_delta=before is not None)
        self._installed(v)
        self.loaded_at = self.clock()
        for old in [n for n in self.base if n not in self.history]:
            del self.base[old]

    def _chain(self, since: int, cur: Version) -> list[Version] | None:
        if since > cur.version or since < cur.version - HISTORY:
            return None
        chain, v = [], cur
        while v.version > since:
            chain.append(v)
            prev = self.base.get(v.version)
            v = self.history.get(prev) if prev is not None else None
            if v is None:
                return None
        return list(reversed(chain)) if v.version == since else None

    def publish(self) -> Version:
        self.load()
        return self.current

    refresh = publish


@dataclass
class ReplicaServices:
    """What the policy and CrowdSec routes use, without a store: ``store`` is None, and AS
    numbers come from ``asn_db``."""
    settings: object
    folder: Path
    clock: Callable[[], datetime] = utcnow
    store: None = None
    keys: ReplicaKeys = field(default_factory=ReplicaKeys)
    publisher: ReplicaPublisher = None
    failures: Failures = field(default_factory=Failures)
    polls: Counter = field(default_factory=Counter)
    cursors: dict = field(default_factory=dict)
    cursor_at: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    geo: object = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.publisher = self.publisher or ReplicaPublisher(self.folder, self.clock, self.settings.policy_max_age,
                                                            self.keys)
        if self.geo is None and self.settings.asn_db:
            from core.geodb import GeoDB
            self.geo = GeoDB(self.settings.asn_db)

    @property
    def writer(self) -> str:
        return self.publisher.manifest.get("writer") or "(unknown: no manifest read yet)"

    def asn_of(self, addr) -> str | None:
        if self.geo is None:
            return None
        found = self.geo.lookup(str(addr))
        return str(found[0]) if found and found[0] is not None else None

    def follow(self) -> None:
        """Poll the folder until stopping."""
        while not self.stopping.wait(POLL):
            if self.publisher.load():
                log.info("replica: policy version %s", self.publisher.current.version)


def _router():
    router = APIRouter(tags=["replica"])

    @router.get("/healthz")
    def healthz(services: ServicesDep) -> dict:
        """The version served, the writer, and how long since the writer was last heard of."""
        pub = services.publisher
        written = pub.manifest.get("written_at")
        silent = (services.clock() - datetime.fromisoformat(written)).total_seconds() if written else None
        problem = pub.error or (f"the writer has not written {services.folder / MANIFEST} for {silent:.0f} s"
                                if silent is not None and silent > SILENT else None)
        return {"status": "degraded" if problem else "ok", "role": "replica", "writer": services.writer,
                "replica_of": str(services.folder), "policy_version": pub.current.version,
                "policy_generated_at": pub.current.generated_at, "writer_silent_seconds": silent, "error": problem}

    @router.get("/v1/whoami")
    def whoami(who: AnyKey) -> dict:
        return {"name": who.name, "role": who.role}

    @router.get("/metrics")
    def metrics(services: ServicesDep, who: AnyKey) -> Response:
        cur = services.publisher.current
        lines = ["# HELP pullwarden_policy_version The published policy's version.",
                 "# TYPE pullwarden_policy_version gauge", f"pullwarden_policy_version {cur.version}",
                 "# HELP pullwarden_active_bans Bans in force.", "# TYPE pullwarden_active_bans gauge",
                 f"pullwarden_active_bans {len(cur.content['bans'])}",
                 "# HELP pullwarden_polls_total Policy and stream polls per key.",
                 "# TYPE pullwarden_polls_total counter"]
        lines += [f'pullwarden_polls_total{{key="{n}"}} {c}' for n, c in sorted(services.polls.items())]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @router.api_route("/v1/admin/{rest:path}", methods=methods, include_in_schema=False)
    @router.api_route("/v1/stats/{rest:path}", methods=methods, include_in_schema=False)
    def elsewhere(request: Request, services: ServicesDep, who: AnyKey) -> JSONResponse:
        what = "changes" if request.url.path.startswith("/v1/admin/") else "statistics"
        return JSONResponse({"detail": f"this is a read-only replica of {services.folder}: {what} go to the "
                                       f"writer at {services.writer}", "writer": services.writer}, status_code=409)
    return router


def create_replica_app(services: ReplicaServices) -> FastAPI:
    from enforcer.guard import KeyGate
    from enforcer.routes import crowdsec, policy
    app = FastAPI(title="pullwarden enforcer (read-only replica)", version="1", openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.state.services = services
    app.add_exception_handler(CrowdSecForbidden, crowdsec_forbidden)
    for router in (_router(), policy.router, crowdsec.router):
        app.include_router(router)
    app.add_middleware(KeyGate)
    return app


def run(cfg, echo: Callable[[str], None]) -> None:
    """`pullwarden serve --replica-of DIR`: wait for the writer's first manifest, then serve."""
    from enforcer import connections
    services = ReplicaServices(cfg, Path(cfg.replica_of))
    said = False
    while not services.publisher.load():
        if not said:
            echo(f"waiting for a policy in {cfg.replica_of} (a writer with publish_dir = {cfg.replica_of})"
                 + (f": {services.publisher.error}" if services.publisher.error else ""))
            said = True
        time.sleep(POLL)
    follower = threading.Thread(target=services.follow, name="replica-follow", daemon=True)
    follower.start()
    echo(f"pullwarden replica serving on http://{cfg.host}:{cfg.port} (pid {os.getpid()}, policy version "
         f"{services.publisher.current.version} from {cfg.replica_of}, writer {services.writer})")
    import signal
    signal.signal(signal.SIGTERM, lambda *_: None)      # see cli/serve.py: let uvicorn return
    try:
        connections.run(create_replica_app(services), cfg.host, cfg.port)
    finally:
        services.stopping.set()

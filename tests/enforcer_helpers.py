"""A real enforcer on loopback: uvicorn in a thread, over a fresh DuckDB, with a clock the
test moves."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta

import httpx
import uvicorn

from core.settings import load
from core.store import open_store
from enforcer import jobs
from enforcer.app import create_app
from enforcer.keys import create_key
from enforcer.service import Services

NOW = datetime(2026, 11, 27, 12, 0, 0)


class Clock:
    def __init__(self, t: datetime = NOW):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw) -> None:
        self.t += timedelta(**kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Enforcer:
    def __init__(self, tmp_path, **settings):
        self.clock = Clock()
        self.cfg = load(None, {"db": str(tmp_path / "db.duckdb"), **settings}, environ={})
        self.store = open_store(self.cfg.db)
        self.keys = {role: create_key(self.store, role, role, NOW) for role in ("proxy", "viewer", "admin")}
        self.services = Services(self.store, self.cfg, clock=self.clock)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.services), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def headers(self, role: str) -> dict:
        return {"X-Api-Key": self.keys[role]}

    def ban(self, value: str, hours: float = 1, scope: str = "ip", rule: str = "test-rule", effect: str = "ban",
            tier: str | None = None, reason: str = "testing") -> int:
        with self.services.lock:
            return self.store.value("""
                insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, created_at, until)
                values (nextval('decision_seq'), ?, ?, ?, ?, ?, 'rule', ?, ?, ?) returning id""",
                [scope, value, effect, tier, rule, reason, self.clock(), self.clock() + timedelta(hours=hours)])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.store.close()


@contextmanager
def serving(workdir, *args, clean_exit: bool = False, nofile: tuple[int, int] | None = None):
    """`pullwarden serve` (with ``args``) on the working directory's database, up and answering;
    its URL. ``clean_exit``: its exit status once stopped must be 0. ``nofile``: its (soft, hard)
    limit on open files, as systemd would set it."""
    import resource
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    limits = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port),
                             *args], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limits)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise AssertionError(f"serve {args} exited: {proc.stderr.read()}") from None
                assert time.time() < deadline, "serve did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        status = proc.wait(timeout=30)
    assert not clean_exit or status == 0


def in_thread(fn):
    """Run a job as the scheduler would, on a thread of its own (jobs lower their priority)."""
    out = {}
    t = threading.Thread(target=lambda: out.update(result=fn()))
    t.start()
    t.join(60)
    return out.get("result")


def append(path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(x + "\n" for x in lines))


@contextmanager
def tailing(tmp_path, clock):
    """serve's services at default settings, tailing tmp_path/access.log (``.log``), on ``clock``."""
    log = tmp_path / "access.log"
    if not log.exists():        # a second serve over the same folder (a restart) keeps the log
        log.write_text("")
    cfg = load(None, {"db": str(tmp_path / "db.duckdb"), "sources": [str(log)]}, environ={})
    store = open_store(cfg.db)
    jobs.configure_store(store, cfg)
    s = Services(store, cfg, clock=clock)
    s.log = log
    try:
        yield s
    finally:
        store.close()


def import_bans(store, n: int, now) -> None:
    """``n`` active bans as a bulk import makes them (10.0.0.0, 10.0.0.1, ...), 24 h long."""
    from datetime import timedelta
    store.execute("""
        insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
        select nextval('decision_seq'), 'ip', '10.' || (i // 65536) || '.' || (i // 256 % 256) || '.' || (i % 256),
               'ban', 'bench', 'import', 'bench import', ?, ? from range(?) t(i)""",
                  [now, now + timedelta(hours=24), n])

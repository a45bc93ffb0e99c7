"""The dashboard's test server: the demo month (30 days of a small mirror, ~530k lines, the last two
days and today in redirect mode with the buckets' logs; the demo's ASN/country databases and budget)
ingested and judged at a pinned time, served by a real enforcer on loopback (uvicorn in a thread) whose
clock stays at that time, with a viewer and an admin key."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx

from tests.enforcer_helpers import Clock, Enforcer, free_port

# The demo month ends here: late in November, so month to date has 26 days to show.
NOW = datetime(2026, 11, 27, 12, 0, 0)


def demo_month(root: Path) -> Path:
    """Write, ingest and judge the demo month into root/db.duckdb, as `pullwarden demo` does
    but at NOW instead of the wall clock."""
    from cli.demo import demo_budget, demo_settings
    from core.settings import load
    from core.store import open_store
    from ingest.pipeline import Ingester
    from rules.detect import detect
    from rules.engine import load_rules
    from sample_logs.month import write_month
    folder = root / "sample_logs"
    write_month(folder, NOW)
    cfg = load(None, {"db": str(root / "db.duckdb")}, environ={})
    demo_settings(cfg)                  # the demo's ASN and country databases
    store = open_store(cfg.db)
    try:
        demo_budget(store, NOW)         # and the budget its month crosses
        Ingester(store, cfg).run([str(folder)])
        detect(store, cfg, load_rules(store, None, None), NOW)
    finally:
        store.close()
    return root / "db.duckdb"


class Server(Enforcer):
    """An Enforcer over an existing database (Enforcer makes its own under root)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.clock.t = NOW

    def get(self, path: str, role: str = "viewer", **params):
        r = httpx.get(self.url + path, params=params, headers=self.headers(role), timeout=60)
        r.raise_for_status()
        return r.json()


def serve(root: Path, data: bool = True) -> Server:
    if data:
        demo_month(root)
    return Server(root)


__all__ = ["NOW", "Clock", "Server", "demo_month", "serve"]


@contextmanager
def dashboard_process(srv, cwd: Path):
    """`pullwarden dashboard` on a free port, reaching ``srv`` with its admin key, run from ``cwd``
    with no PULLWARDEN_* of the test's environment; yields its URL once Streamlit is healthy."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "dashboard",
                             "--api", srv.url, "--key", srv.keys["admin"], "--port", str(port)],
                            cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the dashboard did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

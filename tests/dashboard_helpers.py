"""The dashboard's test server: the demo month (30 days of a small mirror, ~530k lines) ingested
and judged at a pinned time, served by a real enforcer on loopback (uvicorn in a thread) whose
clock stays at that time, with a viewer and an admin key."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from tests.enforcer_helpers import Clock, Enforcer

# The demo month ends here: late in November, so month to date has 26 days to show.
NOW = datetime(2026, 11, 27, 12, 0, 0)


def demo_month(root: Path) -> Path:
    """Write, ingest and judge the demo month into root/db.duckdb, as `pullwarden demo` does
    but at NOW instead of the wall clock."""
    from core.settings import load
    from core.store import open_store
    from ingest.pipeline import Ingester
    from rules.detect import detect
    from rules.engine import load_rules
    from sample_logs.month import write_month
    folder = root / "sample_logs"
    write_month(folder, NOW)
    cfg = load(None, {"db": str(root / "db.duckdb")}, environ={})
    store = open_store(cfg.db)
    try:
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

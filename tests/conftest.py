from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import load
from core.store import open_store
from ingest.pipeline import Ingester

EVENT_COLUMNS = ["ts", "client_ip", "peer_ip", "forwarded_for", "remote_user", "method", "status", "bytes",
                 "request_time", "user_agent", "host", "cache_status", "registry", "repository", "kind",
                 "reference", "digest", "uri", "location"]
# the events as a reader sees them: the store leaves peer_ip null when the peer is the client
EVENT_SELECT = ", ".join("coalesce(peer_ip, client_ip) as peer_ip" if c == "peer_ip" else c for c in EVENT_COLUMNS)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean working directory: no pullwarden.toml, no PULLWARDEN_* from the caller."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("PULLWARDEN_"):
            monkeypatch.delenv(key)
    return tmp_path


class Run:
    """Ingest files into a fresh DuckDB under tmp_path and look at the result."""

    def __init__(self, root: Path, **overrides):
        self.root = root
        self.cfg = load(None, {"db": str(root / "db.duckdb"), **overrides}, environ={})
        self.store = open_store(self.cfg.db)

    def ingest(self, *paths, clock=None, **kwargs):
        if clock:
            kwargs["clock"] = clock
        return Ingester(self.store, self.cfg, **kwargs).run([str(p) for p in paths])

    def events(self, order: str = "ts, client_ip, kind, bytes") -> list[dict]:
        rows = self.store.execute(f"select {EVENT_SELECT} from events order by {order}")
        return [dict(zip(EVENT_COLUMNS, r)) for r in rows]

    def rejects(self) -> list[tuple]:
        return self.store.execute("select line_no, reason, line from rejects order by file_id, line_no")

    def close(self):
        self.store.close()


@pytest.fixture
def run(workdir):
    runs = []

    def make(**overrides) -> Run:
        r = Run(workdir, **overrides)
        runs.append(r)
        return r
    yield make
    for r in runs:
        r.close()


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path

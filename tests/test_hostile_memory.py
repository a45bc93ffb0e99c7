"""No out-of-memory at default settings (issue 19 §2): serve starts after a large change made
while it was stopped, the backtest answers, detection fits its memory on the first try, and
where a limit is still hit the API says 503 and what to change."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.settings import load
from core.store import open_store
from enforcer.jobs import configure_store
from enforcer.service import Services

NOW = datetime(2026, 11, 27, 12)


def _bans(store, first: int, n: int, until: datetime) -> None:
    store.execute("""
        insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
        select nextval('decision_seq'), 'ip', '10.' || (i // 65536) || '.' || ((i // 256) % 256) || '.' || (i % 256),
               'ban', 'repull-storm', 'rule', 'pulled the same blobs 412 times in 24h (38.2 GiB)', ?, ?
        from range(?, ?) t(i)""", [NOW, until, first, first + n])


def _serve_start(db: str, at: datetime) -> Services:
    """What `pullwarden serve` does before it answers: its store settings (defaults), then the
    first publish, which compares with what was published before it stopped."""
    cfg = load(None, {"db": db}, environ={})
    store = open_store(db)
    configure_store(store, cfg)
    return Services(store, cfg, clock=lambda: at)


# The sizes of the report, not lowered: 10,000 bans published, 90,000 added while
# serve was stopped; and 100,000 published that all expired meanwhile. Before the difference
# was stored in steps, both starts failed with "failed to allocate data of size 64.0 MiB".
@pytest.mark.parametrize("published, added, expired", [(10_000, 90_000, False), (100_000, 0, True)])
def test_serve_starts_after_a_large_change_while_it_was_stopped(tmp_path, published, added, expired):
    db = str(tmp_path / "db.duckdb")
    store = open_store(db)
    _bans(store, 0, published, NOW + timedelta(hours=1 if expired else 48))
    store.close()
    before = _serve_start(db, NOW)
    version = before.publisher.current.version
    assert len(before.publisher.current.content["bans"]) == published
    before.store.close()
    store = open_store(db)
    _bans(store, published, added, NOW + timedelta(hours=48))
    store.close()
    later = NOW + timedelta(hours=2)
    services = _serve_start(db, later)
    try:
        cur = services.publisher.current
        assert len(cur.content["bans"]) == (0 if expired else published + added)
        # a poller of the version before the stop still gets the whole change as one delta
        changes = services.publisher.changes(version)
        assert len(changes["upsert"]["bans"]) == added
        assert len(changes["remove"]["bans"]) == (published if expired else 0)
        # and after another restart (the steps are stored, not only kept in memory)
        services.store.close()
        again = _serve_start(db, later)
        assert again.publisher.current.version == cur.version
        assert len(again.publisher.changes(version)["upsert"]["bans"]) == added
        again.store.close()
    finally:
        try:
            services.store.close()
        except Exception:
            pass

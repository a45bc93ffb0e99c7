"""A finding is recorded once per episode: passes that keep finding the same rule on the same
entity update its row (last seen, passes, the newest numbers) instead of adding one each."""
from __future__ import annotations

from datetime import timedelta

from core.store import open_store
from rules.detect import detect
from rules.engine import load_rules
from tests.detect_helpers import T0, add_events, settings, storm


def test_passes_continue_one_row_and_a_later_episode_starts_another(tmp_path):
    store = open_store(str(tmp_path / "db.duckdb"))
    cfg = settings(db=str(tmp_path / "db.duckdb"))
    rules = load_rules(store)
    add_events(store, storm("203.0.113.9", hours=30, per_hour=4, blobs=3))
    at = [T0 + timedelta(hours=h) for h in (24, 25, 26, 29)]
    passes = [detect(store, cfg, rules, now) for now in at]
    found = [f.rule.name for f in passes[0].findings if f.entity == "203.0.113.9"]
    assert found                                          # the storm is found by every pass
    rows = store.execute("""select rule, now, last_seen, passes from findings where entity = '203.0.113.9'
                            order by rule""")
    assert sorted(r[0] for r in rows) == sorted(found)    # one row a rule, not one a pass
    assert all((r[1], r[2], r[3]) == (at[0], at[-1], 4) for r in rows if r[0] in found)
    # four days later the same client storms again: a new episode, a new row
    later = T0 + timedelta(days=4)
    add_events(store, storm("203.0.113.9", start=later, hours=26, per_hour=4, blobs=3))
    detect(store, cfg, rules, later + timedelta(hours=25))
    again = store.execute("select count(*), max(passes) from findings where entity = '203.0.113.9' and rule = ?",
                          [found[0]])
    assert again == [(2, 4)]
    store.close()

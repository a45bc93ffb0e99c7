"""How far each raw table (events, object_events) has been rolled up: its watermark is the
table's seq (given a chunk at a time at insert, migration 12; never DuckDB's rowid, which a
checkpoint after retention's deletes renumbers), kept in rollup_state under the table's name."""
from __future__ import annotations


def pending(store, table: str, batch: int | None, upto: int | None = None) -> tuple[int, int] | None:
    """(last, top): the seq range of ``table``'s rows not rolled up yet, about ``batch`` rows of
    them (all when None; a chunk is never split), none after seq ``upto`` (None: no bound);
    None when there are none."""
    last = store.value("select last_rowid from rollup_state where name = ?", [table])
    last = -1 if last is None else last
    top = store.value(f"select max(seq) from {table}")
    if top is not None and upto is not None:
        top = min(top, upto)
    if top is None or top <= last:
        return None
    if batch:
        # seq has gaps (a rolled-back chunk's numbers are not given again): the seq of the
        # batch'th new row, not last + batch
        top = min(top, store.value(f"select max(seq) from (select seq from {table} where seq > ? order by seq "
                                   "limit ?)", [last, batch]))
    return last, top


def advance(store, table: str, top: int) -> None:
    """Inside the slice's transaction: ``table`` is rolled up to seq ``top``."""
    store.execute("insert or replace into rollup_state values (?, ?)", [table, top])

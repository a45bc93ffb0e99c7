"""The schema: version 1 plus numbered migrations; an older database upgrades in place."""
from __future__ import annotations

from datetime import datetime

import duckdb

from core import store as store_mod
from core.store import open_store


def test_a_version_1_database_is_upgraded_keeping_its_data(tmp_path):
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)                       # what pullwarden 0.1 (schema 1) left behind
    con.execute(store_mod.SCHEMA)
    con.execute("insert into schema_version values (1)")
    con.execute("""insert into events (ts, client_ip, peer_ip, kind, file_id)
                   values ('2024-11-20 10:00:00', '198.51.100.7', '198.51.100.7', 'ping', 1)""")
    con.close()
    s = open_store(path)
    assert s.value("select max(version) from schema_version") == store_mod.VERSION == 16
    assert s.value("select count(*) from events") == 1
    assert s.value("select count(*) from decisions") == 0          # a table of migration 2
    assert s.value("select count(*) from reports") == 0            # a table of migration 8
    assert s.value("select count(*) from relay_hourly") == 0       # a table of migration 11
    assert s.value("select seq from events") == 0                  # migration 12: its rowid
    assert s.value("select count(*) from enrich_state") == 0       # migration 13: enriched from the start
    s.close()
    s = open_store(path)                              # opening again changes nothing
    assert s.execute("select version from schema_version") == [(store_mod.VERSION,)]
    s.close()


def test_findings_of_a_version_8_database_become_episodes(tmp_path):
    path = str(tmp_path / "v8.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for sql in store_mod.MIGRATIONS[:7]:
        con.execute(sql)
    con.execute("insert into schema_version values (8)")
    con.execute("""insert into findings values ('2024-11-20 10:00:00', 'tag-scanner', 'address', '198.51.100.7',
                                                '24h', 'ban', false, 'enumerated', '{}')""")
    con.close()
    s = open_store(path)
    assert s.execute("select now, last_seen, passes from findings") == [
        (datetime(2024, 11, 20, 10), datetime(2024, 11, 20, 10), 1)]
    s.close()


def test_passes_of_a_version_14_database_say_nothing_of_their_kind(tmp_path):
    # migration 15: a restarted serve counts the fresh passes' bans from the last full pass;
    # a pass written before it may have been either, so none is taken for the last full one
    path = str(tmp_path / "v14.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for sql in store_mod.MIGRATIONS[:13]:
        con.execute(sql)
    con.execute("insert into schema_version values (14)")
    con.execute("insert into detect_runs values ('2024-11-20 10:00:00', '2024-11-20 10:00:01', 0.5, 0, 0, null)")
    con.close()
    s = open_store(path)
    from rules.detect import last_full_pass
    assert s.execute("select kind from detect_runs") == [(None,)]
    assert last_full_pass(s, datetime(2024, 11, 21)) is None
    s.close()


def test_a_newer_database_is_refused(tmp_path):
    path = str(tmp_path / "new.duckdb")
    open_store(path).close()
    con = duckdb.connect(path)
    con.execute("update schema_version set version = 99")
    con.close()
    import pytest
    with pytest.raises(RuntimeError, match="schema version 99, newer"):
        open_store(path)


def test_roll_ups_of_a_version_10_database_keep_their_bytes_none_from_object_storage(tmp_path):
    path = str(tmp_path / "v10.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for sql in store_mod.MIGRATIONS[:9]:
        con.execute(sql)
    con.execute("insert into schema_version values (10)")
    con.execute("""insert into facts_hourly (hour, client_ip, requests, bytes, blob_bytes)
                   values ('2024-11-20 10:00:00', '198.51.100.7', 3, 5000, 4000)""")
    con.close()
    s = open_store(path)
    assert s.execute("select requests, bytes, blob_bytes, object_bytes, unjoined_bytes from facts_hourly") == [
        (3, 5000, 4000, 0, 0)]
    s.close()


def test_a_previous_release_database_keeps_its_watermark_and_rolls_up_only_what_is_new(tmp_path):
    """What the release before migration 12 left behind (schema 11): events rolled up to a rowid
    watermark, and some after it. The upgrade gives every event its rowid as seq, so the
    watermark still means what it meant, and the next events are numbered after all of them."""
    from rules.rollup import roll_up
    from tests.detect_helpers import T0, add_events, ev
    path = str(tmp_path / "v11.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for sql in store_mod.MIGRATIONS[:10]:
        con.execute(sql)
    con.execute("insert into schema_version values (11)")
    con.execute("""insert into events (ts, client_ip, peer_ip, kind, method, status, bytes, file_id)
                   select ?::timestamp + to_minutes(range), '198.51.100.' || (range % 7), '198.51.100.1', 'manifest',
                          'GET', 200, 1000, 1 from range(5000)""", [T0])
    con.execute("""insert into object_events (ts, client_ip, source, method, status, bytes, file_id)
                   values (?, '203.0.113.9', 's3', 'GET', 200, 10, 2)""", [T0])
    con.execute("insert into rollup_state values ('events', 2999)")     # rowids 0..2999 were rolled up
    con.close()
    s = open_store(path)
    assert s.value("select max(version) from schema_version") == store_mod.VERSION
    assert s.execute("select count(*), min(seq), max(seq), count(distinct seq) from events") == [(5000, 0, 4999, 5000)]
    assert s.value("select seq from object_events") == 0
    assert roll_up(s) == 2000                         # rowids 3000..4999, as the old release would have
    add_events(s, [ev(T0, "192.0.2.1"), ev(T0, "192.0.2.2")])
    assert s.value("select min(seq) from events where client_ip like '192.0.2.%'") > 4999
    assert roll_up(s) == 2
    assert s.value("select sum(requests) from facts_hourly where client_ip <> '203.0.113.9'") == 2002
    s.close()


def test_a_version_13_database_keeps_its_object_rows_and_roll_ups(tmp_path):
    """Migration 14: object rows gain requester/auth_type (null: not recorded then), roll-ups gain
    exact_bytes/timed_bytes (0: how a byte was joined was not kept then), and store_calls_hourly."""
    path = str(tmp_path / "v13.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for sql in store_mod.MIGRATIONS[:12]:
        con.execute(sql)
    con.execute("insert into schema_version values (13)")
    con.execute("""insert into object_events (ts, client_ip, source, method, status, bytes, file_id)
                   values ('2024-11-20 10:00:00', '198.51.100.7', 's3', 'GET', 200, 4000, 1)""")
    con.execute("""insert into facts_hourly (hour, client_ip, requests, bytes, object_bytes)
                   values ('2024-11-20 10:00:00', '198.51.100.7', 1, 4000, 4000)""")
    con.close()
    s = open_store(path)
    assert s.execute("select bytes, requester, auth_type from object_events") == [(4000, None, None)]
    assert s.execute("select bytes, object_bytes, exact_bytes, timed_bytes from facts_hourly") == [(4000, 4000, 0, 0)]
    assert s.value("select count(*) from store_calls_hourly") == 0
    s.close()


def test_a_version_15_database_keeps_its_peers_and_takes_events_without_one(tmp_path):
    """Migration 16: peer_ip may be null (the peer is the client); the rows from before keep theirs."""
    path = str(tmp_path / "v15.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for sql in store_mod.MIGRATIONS[:14]:
        con.execute(sql)
    con.execute("insert into schema_version values (15)")
    con.execute("""insert into events (ts, client_ip, peer_ip, kind, file_id)
                   values ('2024-11-20 10:00:00', '198.51.100.7', '198.51.100.7', 'ping', 1),
                          ('2024-11-20 10:00:01', '203.0.113.9', '10.0.0.5', 'ping', 1)""")
    con.close()
    s = open_store(path)
    s.execute("""insert into events (ts, client_ip, peer_ip, kind, file_id)
                 values ('2024-11-20 10:00:02', '192.0.2.1', null, 'ping', 1)""")
    assert s.execute("select client_ip, peer_ip, coalesce(peer_ip, client_ip) from events order by ts") == [
        ("198.51.100.7", "198.51.100.7", "198.51.100.7"), ("203.0.113.9", "10.0.0.5", "10.0.0.5"),
        ("192.0.2.1", None, "192.0.2.1")]
    s.close()


def test_a_new_database_is_the_schema_an_upgraded_one_has(tmp_path):
    """A new database is made in one transaction (schema and every migration); it must come out as
    a version 1 database upgraded one version at a time does: columns, defaults, sequences, rows."""
    old = str(tmp_path / "old.duckdb")
    con = duckdb.connect(old)
    con.execute(store_mod.SCHEMA)
    con.execute("insert into schema_version values (1)")
    con.close()

    def shape(path: str) -> list:
        s = open_store(path)
        try:
            return [s.execute("""select table_name, column_name, ordinal_position, data_type, is_nullable, column_default
                                 from information_schema.columns order by all"""),
                    s.execute("select sequence_name, start_value, last_value from duckdb_sequences() order by all"),
                    s.execute("select index_name, table_name, sql from duckdb_indexes() order by all"),
                    s.execute("""select table_name, constraint_type, constraint_text from duckdb_constraints()
                                 order by all"""),
                    s.execute("select * from tiers order by all"), s.execute("select * from kv order by all"),
                    s.execute("select * from schema_version")]
        finally:
            s.close()
    assert shape(str(tmp_path / "new.duckdb")) == shape(old)

"""Enrichment reads only the events added since the last run (enrich_state, by seq), and still
looks up what the full pass did: addresses from before a database was configured, addresses a
damaged database failed on, events added after retention and a checkpoint."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from core.retention import prune
from core.geodb import GeoDB
from ingest.pipeline import Ingester
from rules.rollup import roll_up
from tests.conftest import write
from tests.test_enrich import LINE, build, damaged

NETWORKS = {"198.51.100.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "EXAMPLE"},
            "203.0.113.0/24": {"autonomous_system_number": 64501, "autonomous_system_organization": "OTHER"}}


class Counting(GeoDB):
    """A real database that remembers which addresses it was asked about."""

    def __init__(self, *args):
        super().__init__(*args)
        self.asked: list[str] = []

    def lookup(self, ip):
        self.asked.append(ip)
        return super().lookup(ip)


def ingest(r, log, geo_path=None):
    ing = Ingester(r.store, r.cfg)
    if geo_path:
        ing.geo = Counting(str(geo_path))
    ing.run([str(log)])
    return ing.geo


def lines(ips, n=0):
    return [LINE.format(ip=ip, n=(n + i) % 10) for i, ip in enumerate(ips)]


def test_a_second_batch_looks_up_only_its_new_addresses(run, workdir):
    asn = build(workdir / "asn.mmdb", "GeoLite2-ASN", NETWORKS)
    r = run(asn_db=str(asn))
    geo = ingest(r, write(workdir / "a.log", lines(["198.51.100.1", "198.51.100.2", "198.51.100.1"])), asn)
    assert sorted(geo.asked) == ["198.51.100.1", "198.51.100.2"]
    # a probe for what the run reads: without its ip_info row, an address only the first batch
    # has would be looked up again by a run that read the events before its watermark
    r.store.execute("delete from ip_info where ip = '198.51.100.2'")
    geo = ingest(r, write(workdir / "b.log", lines(["198.51.100.1", "203.0.113.5", "198.51.100.9"])), asn)
    assert sorted(geo.asked) == ["198.51.100.9", "203.0.113.5"]
    assert r.store.execute("select ip, asn from ip_info order by ip") == [
        ("198.51.100.1", 64500), ("198.51.100.9", 64500), ("203.0.113.5", 64501)]
    assert r.store.value("select seq from enrich_state where name = 'addresses events'") == \
        r.store.value("select max(seq) from events")


def test_addresses_from_before_a_database_was_configured_are_looked_up(run, workdir):
    r = run()                                                   # no database: nothing looked up
    ingest(r, write(workdir / "a.log", lines(["198.51.100.1", "203.0.113.5"])))
    assert r.store.value("select count(*) from ip_info") == 0
    assert r.store.value("select count(*) from user_agents") == 1      # user agents go on regardless
    r.close()
    asn = build(workdir / "asn.mmdb", "GeoLite2-ASN", NETWORKS)
    r = run(asn_db=str(asn))
    geo = ingest(r, write(workdir / "b.log", lines(["198.51.100.9"])), asn)
    assert sorted(geo.asked) == ["198.51.100.1", "198.51.100.9", "203.0.113.5"]
    assert r.store.execute("select ip, asn from ip_info order by ip") == [
        ("198.51.100.1", 64500), ("198.51.100.9", 64500), ("203.0.113.5", 64501)]


def test_an_address_a_damaged_database_failed_on_is_looked_up_by_the_next_run(run, workdir):
    bad = damaged(workdir / "damaged.mmdb")
    r = run(asn_db=str(bad))
    ingest(r, write(workdir / "a.log", lines(["198.51.100.7", "203.0.113.9"])))
    assert r.store.execute("select ip from ip_info") == [("203.0.113.9",)]     # 198.51.100.7 failed
    r.close()
    asn = build(workdir / "asn.mmdb", "GeoLite2-ASN", NETWORKS)          # the database repaired
    r = run(asn_db=str(asn))
    geo = ingest(r, write(workdir / "b.log", lines(["198.51.100.8"])), asn)
    assert sorted(geo.asked) == ["198.51.100.7", "198.51.100.8"]
    assert r.store.execute("select ip, asn from ip_info order by ip") == [
        ("198.51.100.7", 64500), ("198.51.100.8", 64500), ("203.0.113.9", None)]
    assert r.store.value("select count(*) from ip_retry") == 0


def test_a_failure_is_retried_once_per_run_while_the_database_stays_damaged(run, workdir):
    bad = damaged(workdir / "damaged.mmdb")
    r = run(asn_db=str(bad))
    for name in ("a", "b"):         # the second batch repeats the address: asked once, not twice
        geo = ingest(r, write(workdir / f"{name}.log", lines(["198.51.100.7"])), bad)
        assert geo.asked == ["198.51.100.7"] and geo.failures
    assert r.store.execute("select ip from ip_retry") == [("198.51.100.7",)]


def test_events_added_after_retention_and_a_checkpoint_are_enriched(run, workdir):
    asn = build(workdir / "asn.mmdb", "GeoLite2-ASN", NETWORKS)
    r = run(asn_db=str(asn))
    # three row groups' worth of events, nine in ten of them old: deleting those and checkpointing
    # merges the thinned row groups and renumbers DuckDB's rowids (a rowid watermark would then
    # skip the events added after)
    r.store.execute("""
        insert into events (ts, client_ip, peer_ip, kind, file_id, user_agent)
        select case when i % 10 = 0 then ?::timestamp else ?::timestamp end, '198.51.100.' || (i % 200),
               '198.51.100.1', 'ping', 0, 'curl/8.5.0'
        from range(300000) t(i)""", [datetime(2024, 11, 20), datetime(2024, 1, 1)])
    ingest(r, write(workdir / "a.log", lines(["203.0.113.1"])), asn)
    assert r.store.value("select count(*) from ip_info") == 201
    roll_up(r.store)
    top = r.store.value("select max(rowid) from events")
    assert prune(r.store, 90, datetime(2024, 11, 30), keep_events_days=30)["events"] == 270000
    r.store.execute("checkpoint")
    geo = ingest(r, write(workdir / "b.log", lines(["203.0.113.2", "203.0.113.3"])), asn)
    assert r.store.value("select max(rowid) from events") < top       # what a rowid watermark would miss
    assert sorted(geo.asked) == ["203.0.113.2", "203.0.113.3"]
    assert r.store.value("select count(*) from ip_info where ip like '203.0.113.%'") == 3


def test_a_run_whose_last_unit_fails_leaves_its_events_to_the_next_run(run, workdir):
    asn = build(workdir / "asn.mmdb", "GeoLite2-ASN", NETWORKS)
    r = run(asn_db=str(asn))
    # the run's own row breaks the primary key after enrichment, in the same unit of work: the
    # watermarks roll back with the rows they stand for
    r.store.execute("""insert into ingest_runs (run_id, started_at, seconds, files, lines, events, rejects)
                       values (1, '2024-11-20', 0, 0, 0, 0, 0), (2, '2024-11-20', 0, 0, 0, 0, 0)""")
    with pytest.raises(duckdb.ConstraintException):
        ingest(r, write(workdir / "a.log", lines(["198.51.100.1"])), asn)
    assert r.store.value("select count(*) from enrich_state") == 0
    assert r.store.value("select count(*) from ip_info") == 0
    r.store.execute("delete from ingest_runs")
    geo = ingest(r, write(workdir / "b.log", lines(["203.0.113.5"])), asn)
    assert sorted(geo.asked) == ["198.51.100.1", "203.0.113.5"]

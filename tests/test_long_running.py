"""Running for weeks: raw events go after keep_events_days and roll-ups after keep_rollups_days,
the roll-ups' watermark survives the deletes and the checkpoints that follow them (DuckDB
renumbers rowids then), and a month's report outlives its events and its roll-ups."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

from core.retention import prune
from reports import archive, monthly
from rules.rollup import roll_up
from tests.conftest import write
from tests.detect_helpers import add_events, ev

NOW = datetime(2024, 11, 20, 12)
LINE = ('198.51.100.{a} - - [{t:%d/%b/%Y:%H:%M:%S} +0000] "GET /v2/library/nginx/manifests/{n} HTTP/1.1" '
        '200 {n} "-" "docker/24.0.7 go/go1.20.10" "-"')


def lines(n: int, first: int = 0, old_share: int = 9):
    """n lines, ``old_share`` of every 10 from 60 days before NOW (a late archive of another node
    merged with today's log), the rest from NOW's hour: the old ones are spread over every row
    group, so deleting them thins all of them."""
    out = []
    for k in range(first, first + n):
        t = NOW - timedelta(days=60) if k % 10 < old_share else NOW - timedelta(minutes=30)
        out.append(LINE.format(a=k % 200, t=t + timedelta(seconds=k % 600), n=k))
    return out


def test_the_watermark_survives_deletes_and_vacuums_where_rowid_does_not(run, workdir):
    r = run()
    first = write(workdir / "a.log", lines(300_000))
    assert r.ingest(first, clock=lambda: time.time() + 60).total("events") == 300_000
    assert roll_up(r.store) == 300_000
    rowid_watermark = r.store.value("select max(rowid) from events")
    done = prune(r.store, 90, NOW, keep_events_days=35)
    assert done["events"] == 270_000
    r.store.execute("checkpoint")
    r.store.execute("vacuum events")
    r.store.execute("checkpoint")
    # what the old watermark relied on is gone: the thinned row groups were merged and the rows
    # renumbered, so the next events' rowids are under the old watermark
    assert r.store.value("select max(rowid) from events") < rowid_watermark - 200_000
    second = write(workdir / "b.log", lines(1_000, first=300_000, old_share=0))
    assert r.ingest(second, clock=lambda: time.time() + 60).total("events") == 1_000
    assert r.store.value("select count(*) from events where rowid > ?", [rowid_watermark]) == 0   # rowid: none new
    assert roll_up(r.store) == 1_000                  # seq: exactly the new ones
    assert roll_up(r.store) == 0
    assert r.store.value("select sum(requests) from facts_hourly") == 301_000
    assert r.store.value("select sum(requests) from facts_hourly where hour >= ?", [NOW - timedelta(hours=1)]) == 31_000


def test_events_go_only_once_rolled_up_and_only_before_the_cutoff(run):
    r = run()
    old, new = NOW - timedelta(days=40), NOW - timedelta(days=2)
    add_events(r.store, [ev(old, "192.0.2.1"), ev(old, "192.0.2.2"), ev(new, "192.0.2.3")])
    r.store.execute("insert into proxy_events (ts, msg, file_id, line_no) values (?, 'old', 1, 1), (?, 'new', 1, 2)",
                    [old, new])
    # not rolled up yet (a late log read just now): kept until it is counted; CRProxy's own log
    # is rolled up by nothing and goes by its time alone
    done = prune(r.store, 90, NOW, keep_events_days=35)
    assert (done["events"], done["proxy_events"], done["object_events"]) == (0, 1, 0)
    roll_up(r.store)
    assert prune(r.store, 90, NOW, keep_events_days=35)["events"] == 2
    # object-store rows likewise, by their own watermark (rules/objectjoin.py)
    # downloads: reads of the blob's key through a link the mirror signed (a row without a key
    # or a signature is the mirror's own call, never a client's bytes)
    cols = "ts, client_ip, source, method, status, bytes, digest, file_id, object_key, uri"
    key = "docker/registry/v2/blobs/sha256/aa/aa/data"
    read = f"'203.0.113.9', 's3', 'GET', 200, {{}}, 'sha256:aa', 2, '{key}', '/{key}?X-Amz-Signature=ab'"
    r.store.execute(f"insert into object_events ({cols}) values (?, {read.format(10)}), (?, {read.format(20)})",
                    [old, new])
    assert prune(r.store, 90, NOW, keep_events_days=35)["object_events"] == 0
    roll_up(r.store)
    assert prune(r.store, 90, NOW, keep_events_days=35)["object_events"] == 1
    r.store.execute("checkpoint")
    r.store.execute(f"insert into object_events ({cols}) values (?, {read.format(40)})", [new])
    roll_up(r.store)
    assert r.store.value("select sum(object_bytes) from facts_hourly") == 70
    assert r.store.value("select count(*) from events") == 1
    assert r.store.value("select sum(requests) from facts_hourly where client_ip like '192.0.2.%'") == 3   # still counted
    assert prune(r.store, 90, NOW, keep_events_days=1)["events"] == 0       # never under 8 days: detection's week
    assert "events" not in prune(r.store, 90, NOW)                          # None: events kept whole


def test_a_months_report_outlives_its_events_then_its_roll_ups(tmp_path):
    from core.store import open_store
    from tests.test_report import NOW as REPORT_NOW
    from tests.test_report import cfg, traffic
    s = open_store(str(tmp_path / "r.duckdb"))
    add_events(s, traffic())                           # 2026-10-01 .. 2026-12-02, every 3 hours
    roll_up(s)
    c = cfg(tmp_path)
    october = monthly.figures(s, "2026-10", "UTC", REPORT_NOW)
    first = archive.build(s, "2026-10", c, REPORT_NOW)
    assert first.frozen and october["total_bytes"] > 0
    # October's events are deleted: the report comes from the roll-ups, the same figures
    done = prune(s, 90, REPORT_NOW, keep_events_days=30)
    assert done["events"] > 0 and s.value("select min(ts) from events") >= REPORT_NOW - timedelta(days=30)
    assert s.value("select count(*) from events where ts < '2026-11-01'") == 0
    assert monthly.figures(s, "2026-10", "UTC", REPORT_NOW) == october
    again = archive.build(s, "2026-10", c, REPORT_NOW + timedelta(days=1))
    assert again.outputs == first.outputs and not again.stale
    # months later its roll-ups go too: the frozen report is what is left, as it was
    later = datetime(2027, 3, 1)
    done = prune(s, 90, later, keep_events_days=35, keep_rollups_days=100)
    assert done["facts_hourly"] > 0 and s.value("select min(hour) from facts_hourly") >= later - timedelta(days=100)
    assert s.value("select count(*) from facts_hourly where hour < '2026-11-01'") == 0
    kept = archive.build(s, "2026-10", c, later)
    assert kept.frozen and not kept.stale and kept.outputs == first.outputs
    assert json.loads(kept.outputs["json"])["total_bytes"] == october["total_bytes"]
    assert archive.build(s, "2026-10", c, later, refresh=True).outputs == first.outputs   # never an empty one
    assert "2026-10" in [m["month"] for m in archive.listing(s, "UTC")]
    s.close()


def test_a_simulated_clock_for_soak_tests_and_serve_refuses_half_of_one(workdir):
    from click.testing import CliRunner

    from cli.main import cli
    from core.clock import Simulated
    clock = Simulated(datetime(2026, 1, 1), 86400, origin=time.time() - 2)     # a day a second, 2 s ago
    assert datetime(2026, 1, 3) <= clock() < datetime(2026, 1, 3, 12)
    assert clock.rate == 86400
    res = CliRunner().invoke(cli, ["serve", "--clock-rate", "10"])
    assert res.exit_code == 2 and "give --clock-start too" in res.output
    res = CliRunner().invoke(cli, ["serve", "--clock-start", "2026-01-01", "--clock-rate", "0"])
    assert res.exit_code == 2 and "above 0" in res.output

"""`pullwarden ingest`, `stats` and `prune`: reading logs into the store, its daily totals, and
its retention."""
from __future__ import annotations

import json
import signal
import sys
import time
from datetime import timedelta

import click

from cli.app import cli, fail, now_option, open_lake_or_fail, open_or_fail, run_now, with_settings


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--format", default=None,
              help="auto (default: sniffed per file), combined, main, clf (CRProxy), nginx-json, or an object store's access log: s3, oss, logpush.")
@click.option("--log-format", default=None, help="An nginx log_format string, pasted from nginx.conf.")
@click.option("--asn-db", default=None, help="MaxMind-format ASN database (env PULLWARDEN_ASN_DB).")
@click.option("--country-db", default=None, help="MaxMind-format country database (env PULLWARDEN_COUNTRY_DB).")
@click.option("--follow", is_flag=True, help="Keep reading new lines and new files until interrupted.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (one per pass with --follow).")
@with_settings
def ingest(cfg, paths, follow, as_json):
    """Read access logs (files, directories or globs) into the DuckDB file, exactly once.

    Re-running adds nothing; lines appended since the last run are read from where it
    stopped; rotated, truncated and .gz files are recognized by their content. Lines that
    cannot be parsed are counted and kept in the rejects table with file and line number.
    In a directory, files named like logs are read (*.log, *.log.1, *.gz, *.json, *.jsonl).
    """
    from ingest.pipeline import IngestError, Ingester
    patterns = list(paths) or cfg.sources
    if not patterns:
        fail("no PATH given and no `sources` setting; try `pullwarden ingest sample_logs/`")
    store = open_or_fail(cfg.db)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    failed = False
    try:
        while True:
            try:
                ingester = Ingester(store, cfg)
                plan = ingester.plan(patterns)
                total = sum(max(0, p.stat().st_size - (r["read_offset"] if r and p.suffix != ".gz" else 0))
                            for p, r, _ in plan)
                hidden = as_json or not sys.stderr.isatty()
                with click.progressbar(length=total, label="ingest", file=sys.stderr, hidden=hidden) as bar:
                    ingester.progress = bar.update
                    report = ingester.run(patterns, plan)
            except IngestError as e:
                fail(str(e))
            failed = failed or any(f.error for f in report.files)
            _print_ingest(report, as_json, quiet_if_empty=follow)
            if not follow or stop:
                break
            deadline = time.time() + cfg.follow_interval
            while time.time() < deadline and not stop:
                time.sleep(0.05)
            if stop:
                break
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    sys.exit(1 if failed else 0)


def _print_ingest(report, as_json: bool, quiet_if_empty: bool = False) -> None:
    d = report.as_dict()
    if quiet_if_empty and not d["lines"]:
        return
    if as_json:
        click.echo(json.dumps(d))
        return
    for notice in report.notices:
        click.echo(f"notice: {notice}", err=True)
    # an object store's rows are counted among a file's events (lines = events + rejects +
    # proxy lines), but they are not requests to the proxy: said apart
    for f in report.files:
        status = f"error: {f.error}" if f.error else (
            f"{f.lines} lines, "
            + (f"{f.object_events} object-storage events" if f.object_events else f"{f.events} events")
            + f", {f.rejects} rejected" + (f", {f.proxy_events} proxy log lines" if f.proxy_events else ""))
        click.echo(f"  {f.path} [{f.format if len(f.format) < 20 else 'custom'}]: {status}")
    click.echo(f"files {d['files']}  lines {d['lines']}  events {d['events'] - d['object_events']}  "
               + (f"object-storage events {d['object_events']}  " if d["object_events"] else "")
               + f"rejected {d['rejected']}  proxy events {d['proxy_events']}  seconds {d['seconds']}  "
               f"lines/s {d['lines_per_second']}")


@cli.command()
@click.option("--from", "start", default=None, help="First day or time, ISO 8601 UTC (default: the first event).")
@click.option("--to", "end", default=None, help="End (exclusive), ISO 8601 UTC; a day means its midnight "
              "(default: after the last event).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--parquet", "lake", default=None, type=click.Path(file_okay=False),
              help="Read a folder of `export parquet` files, one subfolder per node, instead of the database.")
@with_settings
def stats(cfg, start, end, as_json, lake):
    """Totals per day and registry: requests, TiB served, unique client addresses, and how
    much came from object-storage logs (redirected blobs). Whole hours. While serve holds the
    file, read through its API (a viewer key: PULLWARDEN_API_KEY). With --parquet, over every
    node's exports in a folder (docs/scale-out.md)."""
    from cli.remote import call, local_store
    from reports.queries import TIB, daily_totals, parse_when
    try:
        since, until = parse_when(start), parse_when(end)
    except ValueError as e:
        fail(str(e))
    if lake:                            # the day folders [since, until) touches
        store = open_lake_or_fail(lake, since and since.date(),
                                  until and (until - timedelta(microseconds=1)).date())
    else:
        store = local_store(cfg)
    if store is None:
        from urllib.parse import urlencode
        query = urlencode({k: v for k, v in (("start", start), ("end", end)) if v})
        out = call(cfg, "GET", "/v1/stats/days" + (f"?{query}" if query else ""))
    else:
        from rules.rollup import roll_up
        try:
            roll_up(store, settings=cfg)    # what was ingested since the last pass counts too
            out = daily_totals(store, since, until)
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(out, default=str))
        return
    click.echo(f"{'day':<12}{'registry':<24}{'requests':>12}{'TiB':>12}{'unique IPs':>12}")
    for d in out["days"]:
        for r in d["registries"]:
            click.echo(f"{d['day']:<12}{r['registry'] or '(none)':<24}{r['requests']:>12}{r['tib']:>12.6f}{r['unique_ips']:>12}")
        click.echo(f"{d['day']:<12}{'all':<24}{d['requests']:>12}{d['tib']:>12.6f}{d['unique_ips']:>12}")
    click.echo(f"{'total':<36}{out['requests']:>12}{out['tib']:>12.6f}{out['unique_ips']:>12}")
    if out["object_bytes"]:
        click.echo(f"from object-storage logs: {out['object_bytes'] / TIB:.6f} TiB ({out['object_share']:.1%} of the bytes),"
                   f" of which not joined to a request: {out['unjoined_bytes'] / TIB:.6f} TiB")
        click.echo(f"  joined exactly (referer or own 307): {out['exact_bytes'] / TIB:.6f} TiB, by blob and time alone"
                   f" (an estimate): {out['timed_bytes'] / TIB:.6f} TiB")
    if out["store_calls"]:
        click.echo(f"the stores' own calls (the mirror's listings, PUTs, …; no client, not counted above): "
                   f"{out['store_calls']} requests, {out['store_call_bytes']} bytes")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@now_option
@with_settings
def prune(cfg, as_json):
    """Delete findings, ended decisions and the run log older than `keep_days` before now
    (the wall clock, or the replay's `now`), raw events older than `keep_events_days` (rolled up
    first: reports and the dashboard read the roll-ups) and roll-ups older than
    `keep_rollups_days` (frozen reports and the audit log stay). `serve` does this daily by
    itself."""
    from cli.remote import at_server_clock, call, local_store
    from core.retention import prune as prune_store
    store = local_store(cfg)
    if store is None:                   # serve holds the file: its prune, at its clock (an admin key)
        at_server_clock(cfg)
        done = call(cfg, "POST", "/v1/admin/prune", {})
    else:
        try:
            from rules.rollup import roll_up
            roll_up(store, settings=cfg)    # events go only once counted in the roll-ups
            done = prune_store(store, cfg.keep_days, run_now(cfg, store), cfg.keep_events_days,
                                cfg.keep_rollups_days)
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(done))
    else:
        click.echo("deleted " + ", ".join(f"{n} {table}" for table, n in done.items()))

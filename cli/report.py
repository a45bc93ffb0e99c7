"""`pullwarden report monthly`: the monthly TiB budget report as HTML, PDF, CSV and JSON, from
the store, or through the running server's API while serve holds it (the same files)."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from cli.app import cli, fail, open_lake_or_fail, run_now, with_settings
from cli.remote import call, local_store, server_url
from reports.budget import TIB


@cli.group()
def report():
    """Reports: `report monthly` (egress against the monthly TiB budget)."""


def _fetch(cfg, path: str) -> tuple[bytes, dict]:
    """One report file from the running server: its bytes and headers."""
    url = server_url(cfg, None)
    if not url or not cfg.api_key:
        call(cfg, "GET", path)              # says what is missing (URL or key) and exits
    req = urllib.request.Request(url + path, headers={"X-Api-Key": cfg.api_key})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except ValueError:
            detail = None
        fail(f"{url}{path}: {e.code} {detail or e.reason}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"{url}: cannot reach the server ({getattr(e, 'reason', e)})")


@report.command()
@click.option("--month", default=None, help="YYYY-MM (default: the last month that is over, in report_timezone).")
@click.option("--out", "out_dir", default=".", type=click.Path(file_okay=False), show_default=True,
              help="Folder the four files are written to.")
@click.option("--refresh", is_flag=True, help="Replace a frozen report whose inputs changed since (late logs, a new "
                                              "budget); without it the frozen one is kept.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's JSON (the figures) to stdout.")
@click.option("--now", default=None, help="Judge at this time instead of the wall clock (ISO 8601, or `latest`).")
@click.option("--parquet", "lake", default=None, type=click.Path(file_okay=False),
              help="Report over a folder of `export parquet` files, one subfolder per node, instead of the database.")
@with_settings
def monthly(cfg, month, out_dir, refresh, as_json, lake):
    """The month's egress against the budget: daily series, projection (a month in progress),
    comparison with the month before, movers, breakdowns, top 20 consumers, cost, decisions'
    impact. Writes pullwarden-report-MONTH.html (offline, charts embedded), .pdf, .csv, .json.

    A closed month's report is frozen with the sha256 of its inputs: running it again gives the
    same bytes. With --parquet, over every node's exports in a folder (docs/scale-out.md): the
    traffic figures of one database holding all their logs, at the default budget and tiers."""
    from reports import archive, budget
    try:
        tz = budget.zone(cfg.report_timezone)
        if month:
            budget.parse_month(month)
    except ValueError as e:
        fail(str(e))
    if lake:
        from reports.lake import report_days
        store = open_lake_or_fail(lake, *(report_days(month, cfg.report_timezone) if month else ()))
    else:
        store = local_store(cfg)
    if store is None:
        if cfg.now:
            fail("serve holds the database: its reports are made at the server's clock; drop --now / PULLWARDEN_NOW")
        if not month:
            month = call(cfg, "GET", "/v1/stats/budget").get("month")
            month = budget.previous_month(month) if month else None
        if not month:
            fail("no data yet: nothing to report")
        if refresh:
            fail("--refresh needs the database: stop serve first (the API keeps frozen reports as they are)")
        outputs, headers = {}, {}
        for kind in archive.KINDS:
            outputs[kind], headers = _fetch(cfg, f"/v1/stats/reports/{month}.{kind}")
        fig = json.loads(outputs["json"])
        info = {"frozen": headers.get("X-Report-Frozen") == "true", "stale": headers.get("X-Report-Stale") == "true"}
        span = None                         # the server's store: `pullwarden stats` says what it has
    else:
        import duckdb

        from rules.rollup import roll_up
        try:
            # the report reads the roll-ups: what was ingested since the last pass counts too
            # (`ingest` then `report` gave a report of 0 bytes for a month of terabytes)
            roll_up(store, settings=cfg)
            now = run_now(cfg, store)
            month = month or budget.previous_month(budget.month_of(now, tz))
            r = archive.build(store, month, cfg, now, refresh=refresh)
            span = store.execute("select min(hour)::date, max(hour)::date from facts_hourly")[0]
        except ValueError as e:
            fail(str(e))
        except duckdb.Error as e:           # a damaged file: one line, not a traceback
            fail(f"the database: {str(e).strip().splitlines()[0]} (restore it from a backup)")
        finally:
            store.close()
        outputs, fig = r.outputs, json.loads(r.outputs["json"])
        info = {"frozen": r.frozen, "stale": r.stale}
    if not fig.get("requests") and not info["frozen"]:
        # a report of zeros reads as "nothing was served": say there is no data instead
        held = ("`pullwarden stats` shows the days it has" if span is None else
                f"the store has traffic from {span[0]} to {span[1]}" if span[0] else "the store has no traffic at all")
        fail(f"{month} ({fig['timezone']}): no traffic in the store for this month, so no report was written; "
             f"{held}. Ingest the month's logs first (`pullwarden ingest LOG`)")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in archive.KINDS:
        path = folder / f"pullwarden-report-{month}.{kind}"
        path.write_bytes(outputs[kind])
        paths.append(str(path))
    if as_json:
        sys.stdout.write(outputs["json"].decode())
        return
    click.echo(f"{month} ({fig['timezone']}): {fig['total_bytes'] / TIB:.3f} TiB of a {fig['budget_bytes'] / TIB:g} "
               f"TiB budget" + (f", projected {fig['projected_bytes'] / TIB:.3f} TiB (partial)" if fig["partial"] else ""))
    if fig.get("object_bytes"):
        click.echo(f"from object-storage logs: {fig['object_bytes'] / TIB:.3f} TiB ({fig['object_share']:.1%}), "
                   f"not joined to a request: {fig['unjoined_bytes'] / TIB:.3f} TiB")
    if info["frozen"]:
        click.echo(f"frozen, inputs sha256 {fig['inputs_sha256']}")
    if info["stale"]:
        click.echo("notice: the store now gives other figures for this month (late logs, a changed budget?); the "
                   "frozen report is kept: --refresh replaces it", err=True)
    for p in paths:
        click.echo(f"wrote {p}")

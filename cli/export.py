"""`pullwarden export parquet`: events as Hive-partitioned Parquet (reports/export.py), from the
file, or through the running server while serve holds it."""
from __future__ import annotations

import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import click

from cli.main import cli, fail, with_settings


@cli.group()
def export():
    """Export data for other engines: `export parquet`."""


def _day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        fail(f"{name}: {text!r} is not a day (YYYY-MM-DD)")


@export.command()
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--since", required=True, help="First day to export, YYYY-MM-DD (UTC).")
@click.option("--until", default=None, help="End day, exclusive, YYYY-MM-DD (default: through the newest event's day).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def parquet(cfg, dest, since, until, as_json):
    """Write events as Hive-partitioned Parquet: DEST/day=YYYY-MM-DD/registry=NAME/events_N.parquet,
    readable as they are by DuckDB, ClickHouse, Trino and Spark. Exporting a day again replaces
    that day's folder (today, exported again tomorrow, is then whole). While serve holds the
    file, the server writes DEST (an admin key; DEST is on the server's machine)."""
    from cli.remote import call, local_store
    from reports.export import days_between, event_days, export_day, totals
    start, end = _day(since, "--since"), _day(until, "--until")
    dest_path = Path(dest).absolute()
    store = local_store(cfg)
    try:
        if end is None:
            if store is None:
                known = call(cfg, "GET", "/v1/admin/export/span")["last"]
                last = date.fromisoformat(known) if known else None
            else:
                span = event_days(store)
                last = span[1] if span else None
            end = (last + timedelta(days=1)) if last and last >= start else start
        if end < start:
            fail(f"--until {end} is before --since {start}")
        days = days_between(start, end)
        began = time.perf_counter()
        done = []
        hidden = as_json or not sys.stderr.isatty()
        with click.progressbar(days, label="export", file=sys.stderr, hidden=hidden,
                               item_show_func=lambda d: d and d.isoformat()) as bar:
            for day in bar:
                if store is None:
                    done.append(call(cfg, "POST", "/v1/admin/export/parquet",
                                     {"dest": str(dest_path), "day": day.isoformat()}))
                else:
                    try:
                        done.append(export_day(store, dest_path, day))
                    except OSError as e:
                        fail(f"{dest}: {e.strerror or e}")
    finally:
        if store is not None:
            store.close()
    out = totals(done, dest_path, time.perf_counter() - began)
    if as_json:
        click.echo(json.dumps(out))
        return
    for d in out["days"]:
        if d.get("kept"):
            click.echo(f"  {d['day']}: kept as exported before ({d['rows']} events): {d['kept']}")
        elif d["rows"]:
            click.echo(f"  {d['day']}: {d['rows']} events, {d['bytes']} bytes, "
                       f"{len(d['registries'])} registries, {d['files']} files")
    click.echo(f"exported {out['rows']} events of {len(days)} day(s) to {out['dest']} in {out['seconds']} s")

"""`pullwarden export parquet`: events as Hive-partitioned Parquet (reports/export.py), from the
file, or through the running server while serve holds it."""
from __future__ import annotations

import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import click

from cli.app import cli, fail, with_settings


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
    import duckdb

    from cli.remote import call, local_store
    from reports.export import days_between, event_days, totals
    start, end = _day(since, "--since"), _day(until, "--until")
    dest_path = Path(dest).absolute()
    store = local_store(cfg)
    try:
        if end is None:
            if store is None:
                known = call(cfg, "GET", "/v1/admin/export/span")["last"]
                last = date.fromisoformat(known) if known else None
            else:
                try:
                    span = event_days(store)
                except duckdb.Error as e:   # a damaged file: one line, not a traceback
                    fail(f"the database: {_first_line(e)} (restore it from a backup)")
                last = span[1] if span else None
            end = (last + timedelta(days=1)) if last and last >= start else start
        if end < start:
            fail(f"--until {end} is before --since {start}")
        days = days_between(start, end)
        began = time.perf_counter()
        done, failed = [], []
        hidden = as_json or not sys.stderr.isatty()
        with click.progressbar(days, label="export", file=sys.stderr, hidden=hidden,
                               item_show_func=lambda d: d and d.isoformat()) as bar:
            # one day that cannot be written must not cost the others (raw events are pruned
            # after keep_events_days: a day not exported now may never be)
            for day in bar:
                error = _one_day(cfg, store, dest_path, day, done)
                if error:
                    failed.append({"day": day.isoformat(), "error": error})
                    click.echo(f"pullwarden: error: {day}: {error}", err=True)
    finally:
        if store is not None:
            store.close()
    out = totals(done, dest_path, time.perf_counter() - began)
    if failed:
        out["failed"] = failed
    if as_json:
        click.echo(json.dumps(out))
    else:
        _say(out, len(days))
    if failed:
        fail(f"{len(failed)} of {len(days)} day(s) not exported: " + ", ".join(f["day"] for f in failed))


def _one_day(cfg, store, dest: Path, day: date, done: list) -> str | None:
    """Export one day (locally, or through the running server); what went wrong, or None."""
    import duckdb

    from cli.remote import call
    from reports.export import export_day
    if store is None:
        try:
            done.append(call(cfg, "POST", "/v1/admin/export/parquet", {"dest": str(dest), "day": day.isoformat()}))
        except SystemExit:              # call() has said what the server answered
            return "the server refused it (above)"
        return None
    try:
        done.append(export_day(store, dest, day))
    except OSError as e:
        return f"{e.filename or dest}: {e.strerror or e}"
    except duckdb.Error as e:
        return f"the database: {_first_line(e)}"
    return None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0].removeprefix("IO Error: ")


def _say(out: dict, ndays: int) -> None:
    for d in out["days"]:
        if d.get("kept"):
            click.echo(f"  {d['day']}: kept as exported before ({d['rows']} events): {d['kept']}")
        elif d["rows"]:
            click.echo(f"  {d['day']}: {d['rows']} events, {d['bytes']} bytes, "
                       f"{len(d['registries'])} registries, {d['files']} files")
    click.echo(f"exported {out['rows']} events of {ndays} day(s) to {out['dest']} in {out['seconds']} s")

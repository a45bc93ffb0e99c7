"""The `pullwarden` click group and what its commands share (settings, errors, `now`, the store).

Every command module imports this one and adds its commands to the group; cli/main.py imports
the command modules and runs the group, and nothing imports cli/main.py back."""
from __future__ import annotations

import sys
from functools import wraps

import click

from core import settings as settings_mod
from core.store import StoreBusy, StoreError, open_store

TIB = 1 << 40


def fail(message: str, code: int = 2) -> None:
    click.echo(f"pullwarden: error: {message}", err=True)
    sys.exit(code)


def with_settings(f):
    """Adds --config and --db and hands the command its resolved settings."""
    @click.option("--config", type=click.Path(dir_okay=False), default=None,
                  help="TOML settings file (default: ./pullwarden.toml when present).")
    @click.option("--db", default=None, help="DuckDB file (default ./data/pullwarden.duckdb; env PULLWARDEN_DB).")
    @wraps(f)
    def wrapper(config, db, **kwargs):
        # options named like a setting (--format, --asn-db...) override it
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in settings_mod.BY_NAME}
        try:
            cfg = settings_mod.load(config, {"db": db, **overrides})
        except settings_mod.SettingsError as e:
            fail(str(e))
        return f(cfg, **kwargs)
    return wrapper


def actor() -> str:
    """Who makes a change from the command line, for the audit log."""
    import getpass
    return f"cli:{getpass.getuser()}"


def run_now(cfg, store, enforced: bool = False):
    """This run's one `now`: the wall clock, or the replay time the `now` setting pins.
    ``enforced``: the run writes what a live serve enforces, so a time in the future is refused
    (core.clock.enforceable)."""
    from core.clock import enforceable, resolve
    try:
        now = resolve(cfg.now, store)
        return enforceable(now) if enforced else now
    except ValueError as e:
        fail(str(e))


def now_option(f):
    """--now, the `now` setting as a flag (with_settings takes it as an override)."""
    return click.option("--now", default=None, help="Judge at this time instead of the wall clock: ISO 8601 "
                        "(UTC unless it has an offset), or `latest` for the newest ingested event — to replay "
                        "old logs (env PULLWARDEN_NOW).")(f)


def open_or_fail(path: str, read_only: bool = False):
    try:
        return open_store(path, read_only=read_only)
    except (StoreBusy, StoreError) as e:
        fail(str(e))


def open_lake_or_fail(folder: str, first=None, last=None):
    """A store over the nodes' Parquet exports in ``folder`` (reports/lake.py), of the UTC days
    [first, last] when given."""
    from reports.lake import LakeError, open_lake
    try:
        return open_lake(folder, first, last)
    except LakeError as e:
        fail(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli():
    """pullwarden reads a registry mirror's access logs into DuckDB, tells abuse from heavy
    but legitimate traffic, and publishes bans and rate tiers for the proxy.

    Start with `pullwarden ingest sample_logs/` and then `pullwarden stats`.
    Settings come from pullwarden.toml, then PULLWARDEN_* variables, then flags.
    """

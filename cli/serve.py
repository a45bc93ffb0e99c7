"""Commands of the enforcement stage: serve, up, keys, agent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from cli.main import cli, fail, open_or_fail, with_settings


def _serve(cfg, banner: str = "", extra_jobs=()) -> None:
    import sys

    import uvicorn

    from enforcer.app import create_app
    from enforcer.jobs import configure_store, start
    from enforcer.service import Services
    if cfg.now:
        fail(f"serve runs on the wall clock; `now` = {cfg.now!r} ({cfg.origin['now']}) is for replaying old logs "
             "with the other commands: unset it")
    store = open_or_fail(cfg.db)
    configure_store(store, cfg)
    # A job thread busy in Python (a policy rebuild, a detection pass's planning) would hold the
    # GIL for the default 5 ms at a time, and every request would wait that long per switch.
    sys.setswitchinterval(0.0005)
    services = Services(store, cfg)
    scheduler = start(services)
    for name, seconds, fn in extra_jobs:
        scheduler.add_job(fn, "interval", seconds=seconds, id=name, name=name)
    click.echo(f"{banner}pullwarden serving on http://{cfg.host}:{cfg.port} (pid {os.getpid()}, db {cfg.db})", err=True)
    try:
        uvicorn.run(create_app(services), host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        services.stopping.set()         # a backlog is left between two slices, not read to its end
        scheduler.shutdown(wait=True)
        services.save_cursors()
        store.close()


@cli.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@with_settings
def serve(cfg):
    """Run the enforcer API and the scheduled jobs (tail-ingest `sources`, detect, publish) in
    one process, which owns the DuckDB file while it runs."""
    _serve(cfg)


@cli.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@with_settings
def up(cfg):
    """Everything at once: ingest (the demo month of `pullwarden demo` in a checkout, or your
    `sources`), detect at the wall clock, print what is in force, then serve the API and keep
    going (tail-ingest, detect every minute, publish). On first start an admin key is created
    and shown once."""
    import glob

    from cli.demo import first_run, month_folder, show
    from enforcer.keys import create_key
    from enforcer.service import utcnow
    demo = not cfg.sources
    if demo and not Path("sample_logs/generate.py").is_file():
        fail("up needs logs: run it in a pullwarden checkout (it serves the demo month there), or set `sources` "
             "to your access logs (in pullwarden.toml, or PULLWARDEN_SOURCES='/var/log/nginx/access.log*')")
    missing = [p for p in cfg.sources if not glob.glob(p)]
    if missing:
        fail(f"`sources` ({cfg.origin['sources']}): nothing at {', '.join(missing)}")
    patterns = [str(month_folder(cfg))] if demo else list(cfg.sources)
    store = open_or_fail(cfg.db)
    try:
        key = None
        if not store.value("select count(*) from api_keys"):
            key = create_key(store, "admin", "admin", utcnow())
        show(first_run(cfg, store, patterns, generate=demo))
    finally:
        store.close()
    cfg.values["sources"] = patterns
    cfg.values["detect_interval"] = min(cfg.detect_interval, 60.0)
    base = f"http://{cfg.host}:{cfg.port}"
    banner = "\n".join([
        f"admin key (shown once, keep it): {key}" if key else
        "admin key: shown at the first start (another: pullwarden keys create --role admin --name me)",
        f"health: {base}/healthz",
        f"try: curl -s -H 'X-Api-Key: {key or '$KEY'}' '{base}/v1/stats/decisions?active=true'",
        f"proxies: {base}/v1/policy (pullwarden agent), {base}/v1/decisions/stream (CrowdSec bouncers)", ""])
    jobs = []
    if demo:
        from sample_logs.month import write_month
        # the demo mirror keeps serving: today's log grows as the clock moves on
        jobs.append(("demo-month", 60, lambda: write_month(month_folder(cfg), utcnow())))
    _serve(cfg, banner, jobs)


@cli.group()
def keys():
    """API keys: proxy (policy, stream, check), viewer (statistics), admin (changes)."""


@keys.command("create")
@click.option("--role", type=click.Choice(["proxy", "viewer", "admin"]), required=True)
@click.option("--name", required=True, help="Who uses it, e.g. edge-1.")
@click.option("--json", "as_json", is_flag=True)
@with_settings
def keys_create(cfg, role, name, as_json):
    """Create a key; it is shown once, only its hash is stored."""
    from enforcer.keys import create_key
    from enforcer.service import utcnow
    store = open_or_fail(cfg.db)
    try:
        key = create_key(store, name, role, utcnow())
    except ValueError as e:
        fail(str(e))
    finally:
        store.close()
    click.echo(json.dumps({"name": name, "role": role, "key": key}) if as_json else key)
    if not as_json:
        click.echo(f"(key for {name}, role {role}: shown once, only its hash is kept)", err=True)


@keys.command("list")
@with_settings
def keys_list(cfg):
    """List keys (never the keys themselves)."""
    store = open_or_fail(cfg.db)
    try:
        for name, role, created, revoked in store.execute(
                "select name, role, created_at, revoked_at from api_keys order by name"):
            click.echo(f"{name} {role} created {created}" + (f" revoked {revoked}" if revoked else ""))
    finally:
        store.close()


@keys.command("revoke")
@click.argument("name")
@with_settings
def keys_revoke(cfg, name):
    """Revoke a key at once (a running server picks it up within a publish interval)."""
    from enforcer.service import utcnow
    store = open_or_fail(cfg.db)
    try:
        if not store.value("select count(*) from api_keys where name = ? and revoked_at is null", [name]):
            fail(f"no active key named {name!r}")
        store.execute("update api_keys set revoked_at = ? where name = ?", [utcnow(), name])
    finally:
        store.close()
    click.echo(f"revoked {name}")


@cli.command()
@click.option("--api", required=True, help="The enforcer's URL, e.g. http://127.0.0.1:8080")
@click.option("--key", envvar="PULLWARDEN_AGENT_KEY", required=True, help="A proxy key (env PULLWARDEN_AGENT_KEY).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option("--reload", "reload_cmd", help="Command to run after the files changed (e.g. 'nginx -s reload').")
@click.option("--crproxy", help="CRProxy's private admin URL: PUT the lists to /internal/api/*.")
@click.option("--interval", type=float, default=10.0, help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Poll once and exit (for cron or a test).")
def agent(api, key, out_dir, reload_cmd, crproxy, interval, once):
    """Keep CRProxy's and nginx's policy files in step with the enforcer: fetches the policy
    once, then polls for its changes; writes the files atomically, reloads on change,
    optionally pushes the lists to CRProxy."""
    from enforcer.agent import run
    try:
        run(api, key, out_dir, reload_cmd, crproxy, interval, once)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        fail(str(e))

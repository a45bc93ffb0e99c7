"""Commands of the enforcement stage: serve, up, keys, agent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from cli.app import cli, fail, open_or_fail, with_settings
from enforcer.policy_doc import MAX_POLICY_MB


def _serve(cfg, banner: str = "", extra_jobs=(), clock=None) -> None:
    import sys

    from enforcer import heap
    heap.settle()                       # before any thread starts: see enforcer/heap.py
    from enforcer import connections
    from enforcer.app import create_app
    from enforcer.jobs import configure_store, start
    from enforcer.service import Services
    if cfg.replica_of:                  # no store, no jobs: the writer's published policy
        from enforcer.replica import run
        return run(cfg, lambda line: click.echo(line, err=True))
    if cfg.now:
        fail(f"serve runs on the wall clock; `now` = {cfg.now!r} ({cfg.origin['now']}) is for replaying old logs "
             "with the other commands: unset it")
    store = open_or_fail(cfg.db)
    fatal = _Fatal()
    store.on_fatal = fatal
    configure_store(store, cfg)
    # A job thread busy in Python (a policy rebuild, a detection pass's planning) would hold the
    # GIL for the default 5 ms at a time, and every request would wait that long per switch.
    sys.setswitchinterval(0.0005)
    services = Services(store, cfg, **({"clock": clock} if clock else {}))
    scheduler = start(services)
    for name, seconds, fn in extra_jobs:
        scheduler.add_job(fn, "interval", seconds=seconds, id=name, name=name)
    if cfg.publish_dir:                 # every version also into the replicas' folder
        from enforcer.replica import attach
        attach(services, scheduler, cfg)
    from cli import remote
    click.echo(f"{banner}pullwarden serving on http://{cfg.host}:{cfg.port} (pid {os.getpid()}, db {cfg.db})", err=True)
    remote.announce(cfg.db, f"http://{cfg.host}:{cfg.port}")
    # uvicorn stops on SIGTERM and then raises the signal again with the handler it found: with
    # the default one the process would die there, before the jobs stop, the bouncers' cursors
    # are saved and the database is closed. A handler of our own lets it return instead.
    import signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        app = create_app(services)
        app.router.on_startup.append(fatal.arm)     # uvicorn's SIGTERM handler is in place by then
        connections.run(app, cfg.host, cfg.port)    # slow and surplus clients: see there
    finally:
        remote.withdraw(cfg.db)
        services.stopping.set()         # a backlog is left between two slices, not read to its end
        scheduler.shutdown(wait=True)
        if fatal.error is None:
            services.save_cursors()
        store.close()
    if fatal.error is not None:
        fail(f"{cfg.db}: DuckDB invalidated the database ({fatal.error}); exiting so that the service manager "
             "starts serve again (systemd: Restart=on-failure), which opens the file afresh", code=3)


class _Fatal:
    """The store's on_fatal: the first error after which DuckDB refuses every statement (a failed
    checkpoint on a full disk, say). Answering 500 for ever would keep the proxies on a frozen
    policy and never wake the service manager, so serve stops (as on SIGTERM: uvicorn's own
    handler) and exits non-zero."""

    def __init__(self):
        self.error: BaseException | None = None
        self.armed = False

    def __call__(self, e: BaseException) -> None:
        if self.error is not None:
            return
        self.error = e
        import logging
        logging.getLogger("pullwarden").critical("the database is unusable, serve stops: %s", e)
        self._stop()

    def arm(self) -> None:
        self.armed = True
        self._stop()

    def _stop(self) -> None:
        if self.armed and self.error is not None:
            import signal
            os.kill(os.getpid(), signal.SIGTERM)


@cli.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.option("--publish-dir", default=None, metavar="DIR",
              help="Also write each policy version into DIR for read-only replicas (setting publish_dir).")
@click.option("--replica-of", default=None, metavar="DIR",
              help="Serve as a read-only replica: the policy a writer publishes into DIR, no DuckDB file "
              "(setting replica_of).")
@click.option("--clock-start", metavar="TIME", default=None,
              help="Soak tests and demos only, never a live mirror: serve runs on a simulated clock that reads TIME "
              "(ISO 8601, UTC) at --clock-origin and runs --clock-rate times faster than the wall clock, so that "
              "days of detection and retention pass in minutes (bench/soak.py). Every job and answer follows it.")
@click.option("--clock-rate", type=float, default=1.0, show_default=True,
              help="With --clock-start: simulated seconds per wall-clock second (2880: a day every 30 s). The "
              "daily prune then runs every simulated day.")
@click.option("--clock-origin", type=float, default=None, metavar="UNIX_TIME",
              help="With --clock-start: the wall-clock instant (Unix seconds) at which the simulated clock reads "
              "TIME (default: when serve starts), so that a log writer can follow the same clock.")
@with_settings
def serve(cfg, clock_start, clock_rate, clock_origin):
    """Run the enforcer API and the scheduled jobs (tail-ingest `sources`, detect, publish, prune
    daily) in one process, which owns the DuckDB file while it runs. Live, it runs on the wall
    clock; --clock-start gives it a simulated one for soak tests."""
    clock = None
    if clock_start is not None:
        from core.clock import Simulated, parse_time
        try:
            clock = Simulated(parse_time(clock_start), clock_rate, clock_origin)
        except ValueError as e:
            fail(f"--clock-start/--clock-rate: {e}")
    elif clock_rate != 1.0 or clock_origin is not None:
        fail("--clock-rate and --clock-origin shape a simulated clock: give --clock-start too")
    _serve(cfg, clock=clock)


@cli.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.option("--dashboard-port", "dashboard_port", type=int, default=None,
              help="The dashboard's port on 127.0.0.1 (default 8501).")
@click.option("--no-dashboard", is_flag=True, help="Serve the API only.")
@with_settings
def up(cfg, no_dashboard):
    """Everything at once: ingest (the demo month of `pullwarden demo` in a checkout, or your
    `sources`), detect at the wall clock, print what is in force, then serve the API and the
    dashboard and keep going (tail-ingest, detect every minute, publish). On first start an
    admin key is created and shown once; the dashboard acts with it, or later with a key of its
    own (`dashboard`, admin, replaced at every start). The dashboard stops with serve."""
    import glob

    from cli import dashboard
    from cli.demo import demo_settings, first_run, month_folder, show
    from enforcer.changes import audit
    from enforcer.keys import create_key, replace_key
    from enforcer.service import utcnow
    demo = not cfg.sources
    if demo and not Path("sample_logs/generate.py").is_file():
        fail("up needs logs: run it in a pullwarden checkout (it serves the demo month there), or set `sources` "
             "to your access logs (in pullwarden.toml, or PULLWARDEN_SOURCES='/var/log/nginx/access.log*')")
    missing = [p for p in cfg.sources if not glob.glob(p)]
    if missing:
        fail(f"`sources` ({cfg.origin['sources']}): nothing at {', '.join(missing)}")
    patterns = [str(month_folder(cfg))] if demo else list(cfg.sources)
    if demo:
        demo_settings(cfg)          # before serve starts too: its tail ingest looks new addresses up
    store = open_or_fail(cfg.db)
    try:
        key = board_key = None
        if not store.value("select count(*) from api_keys"):
            key = board_key = create_key(store, "admin", "admin", utcnow())
        elif not no_dashboard:
            # the admin key was shown once and is not at hand: the dashboard gets its own
            board_key = replace_key(store, "dashboard", "admin", utcnow())
            audit(store, "pullwarden up", "create key", "key dashboard", {"role": "admin"},
                  "the dashboard started by pullwarden up (a new key at each start)", utcnow())
        show(first_run(cfg, store, patterns, generate=demo))
    finally:
        store.close()
    cfg.values["sources"] = patterns
    cfg.values["detect_interval"] = min(cfg.detect_interval, 60.0)
    base = f"http://{cfg.host}:{cfg.port}"
    board = None
    if not no_dashboard:
        local = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        board = dashboard.start(f"http://{local}:{cfg.port}", board_key, cfg.dashboard_port, quiet=True)
    banner = "\n".join([
        f"admin key (shown once, keep it): {key}" if key else
        "admin key: shown at the first start (another: pullwarden keys create --role admin --name me)",
        *([f"dashboard: {dashboard.url(cfg.dashboard_port)} (acts with an admin key; stops with serve)"] if board else []),
        f"health: {base}/healthz",
        f"try: curl -s -H 'X-Api-Key: {key or '$KEY'}' '{base}/v1/stats/decisions?active=true'",
        f"proxies: {base}/v1/policy (pullwarden agent), {base}/v1/decisions/stream (CrowdSec bouncers)", ""])
    jobs = []
    if demo:
        from sample_logs.month import write_month
        # the demo mirror keeps serving: today's log grows as the clock moves on
        jobs.append(("demo-month", 60, lambda: write_month(month_folder(cfg), utcnow())))
    try:
        _serve(cfg, banner, jobs)
    finally:
        if board:
            dashboard.stop(board)


@cli.group()
def keys():
    """API keys: proxy (policy, stream, check), viewer (statistics), admin (changes)."""


def _api_options(f):
    f = click.option("--api", "api", default=None, help="The server's URL while it runs (found by itself when "
                     "it serves this --db; setting api_url).")(f)
    return click.option("--key", "key", default=None, help="An admin key for that server (env PULLWARDEN_API_KEY).")(f)


def _local_or_api(cfg, api):
    """The store, or None when the command goes through a server's API: the one named by
    --api or api_url, or the one that holds the file."""
    from cli.remote import local_store
    return None if api or cfg.api_url else local_store(cfg)


@keys.command("create")
@click.option("--role", type=click.Choice(["proxy", "viewer", "admin"]), required=True)
@click.option("--name", required=True, help="Who uses it, e.g. edge-1.")
@click.option("--reason", default="created from the command line", show_default=True, help="For the audit log.")
@click.option("--json", "as_json", is_flag=True)
@_api_options
@with_settings
def keys_create(cfg, role, name, reason, as_json, api, key):
    """Create a key; it is shown once, only its hash is stored. Works while serve runs (through
    its API, with an admin key)."""
    from cli.app import actor
    from enforcer.changes import audit
    from enforcer.keys import create_key
    from enforcer.service import utcnow
    store = _local_or_api(cfg, api)
    if store is None:
        from cli.remote import call
        new = call(cfg, "POST", "/v1/admin/keys", {"name": name, "role": role, "reason": reason}, api, key)["key"]
    else:
        try:
            new = create_key(store, name, role, utcnow())
            audit(store, actor(), "create key", f"key {name}", {"role": role}, reason, utcnow())
        except ValueError as e:
            fail(str(e))
        finally:
            store.close()
    click.echo(json.dumps({"name": name, "role": role, "key": new}) if as_json else new)
    if not as_json:
        click.echo(f"(key for {name}, role {role}: shown once, only its hash is kept)", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@_api_options
@with_settings
def keys_list(cfg, as_json, api, key):
    """List keys (never the keys themselves)."""
    from enforcer.keys import list_keys
    store = _local_or_api(cfg, api)
    if store is None:
        from cli.remote import call
        rows = call(cfg, "GET", "/v1/admin/keys", None, api, key)
    else:
        try:
            rows = list_keys(store)
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        click.echo(f"{r['name']} {r['role']} created {r['created_at']}"
                   + (f" revoked {r['revoked_at']}" if r["revoked_at"] else ""))


@keys.command("revoke")
@click.argument("name")
@click.option("--reason", default="revoked from the command line", show_default=True, help="For the audit log.")
@_api_options
@with_settings
def keys_revoke(cfg, name, reason, api, key):
    """Revoke a key at once. While serve runs this goes through its API (an admin key), and the
    next request with the revoked key gets 403."""
    from cli.app import actor
    from enforcer.changes import audit
    from enforcer.keys import revoke_key
    from enforcer.service import utcnow
    store = _local_or_api(cfg, api)
    if store is None:
        from cli.remote import call
        call(cfg, "DELETE", f"/v1/admin/keys/{name}", {"reason": reason}, api, key)
    else:
        try:
            role = revoke_key(store, name, utcnow())
            audit(store, actor(), "revoke key", f"key {name}", {"role": role}, reason, utcnow())
        except (ValueError, LookupError) as e:
            fail(str(e))
        finally:
            store.close()
    click.echo(f"revoked {name}")


@cli.command()
@click.option("--api", required=True, help="The enforcer's URL, e.g. http://127.0.0.1:8080")
@click.option("--key", envvar="PULLWARDEN_AGENT_KEY", required=True, help="A proxy key (env PULLWARDEN_AGENT_KEY).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option("--reload", "reload_cmd", help="Command to run after the files changed (e.g. 'nginx -s reload'); "
              "retried at each poll until it succeeds.")
@click.option("--crproxy", help="CRProxy's private admin URL: PUT each list to /internal/api/* (all of them at "
              "start), retrying one that fails with backoff (1 s doubling to 60 s).")
@click.option("--interval", type=float, default=5.0,
              help="Seconds between polls (one with nothing new is a 304 of a few bytes; at 100,000 bans "
              "a change then reaches nginx within 10 s).")
@click.option("--once", is_flag=True, help="Poll once and exit: 0, 1 when a reload or a push failed, 2 when "
              "the policy could not be fetched or written (for cron or a test).")
@click.option("--dry-run", is_flag=True, help="Poll once and print what would change in --out as a unified "
              "diff; write, reload and push nothing.")
@click.option("--max-policy-mb", type=click.FloatRange(1, 65536), default=MAX_POLICY_MB, show_default=True,
              help="The most a policy answer may unpack to; a bigger one is a failed fetch (100,000 bans are 15 MB).")
def agent(api, key, out_dir, reload_cmd, crproxy, interval, once, dry_run, max_policy_mb):
    """Keep CRProxy's and nginx's policy files in step with the enforcer: fetches the policy
    once, then polls for its changes; writes the files atomically when their bytes change,
    reloads, and optionally pushes the lists to CRProxy."""
    from enforcer.agent import preview, run
    try:
        if dry_run:
            raise SystemExit(preview(api, key, out_dir, reload_cmd, crproxy, max_policy_mb))
        raise SystemExit(run(api, key, out_dir, reload_cmd, crproxy, interval, once, max_mb=max_policy_mb))
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        fail(str(e))

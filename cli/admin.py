"""Admin changes from the command line: the same operations as /v1/admin, audited as cli:<user>.
They need the DuckDB file, so they run while `pullwarden serve` is stopped (it says so otherwise)."""
from __future__ import annotations

import json

import click

from cli.main import actor, cli, fail, open_or_fail, run_now, with_settings
from cli.detect import decisions


def _change(cfg, fn, *args, **kwargs):
    store = open_or_fail(cfg.db)
    try:
        return fn(store, actor(), *args, now=run_now(cfg, store), **kwargs)
    except (ValueError, LookupError) as e:
        fail(str(e))
    finally:
        store.close()


SCOPE = click.Choice(["ip", "range", "asn", "user"])


@cli.command()
@click.argument("scope", type=SCOPE)
@click.argument("value")
@click.option("--duration", default="24h", show_default=True, help="30m, 24h, 7d…")
@click.option("--reason", required=True)
@with_settings
def ban(cfg, scope, value, duration, reason):
    """Ban an address, range, ASN or user by hand."""
    from enforcer.changes import add_decision
    click.echo(f"decision #{_change(cfg, add_decision, scope, value, 'ban', duration, reason)}")


@cli.command()
@click.argument("decision_id", type=int)
@click.option("--reason", required=True)
@with_settings
def unban(cfg, decision_id, reason):
    """End a decision (a ban or a tier assignment) now."""
    from enforcer.changes import revoke
    _change(cfg, revoke, decision_id, reason)
    click.echo(f"decision #{decision_id} revoked")


def _held_change(cfg, fn, ids, rule, reason) -> int:
    """approve or drop: the decisions named, or every held decision of ``rule``."""
    from enforcer.changes import held_ids
    if bool(ids) == bool(rule):
        fail("name the held decisions: their ids, or --rule for all of a rule's")
    if rule:
        store = open_or_fail(cfg.db)
        try:
            ids = held_ids(store, rule)
        finally:
            store.close()
        if not ids:
            fail(f"rule {rule} has no held decisions")
    return _change(cfg, fn, list(ids), reason)


@decisions.command("approve")
@click.argument("ids", nargs=-1, type=int)
@click.option("--rule", help="Every held decision of this rule.")
@click.option("--reason", required=True)
@with_settings
def decisions_approve(cfg, ids, rule, reason):
    """Put decisions the circuit breaker held in force (see `decisions list --held`)."""
    from enforcer.changes import approve
    click.echo(f"{_held_change(cfg, approve, ids, rule, reason)} held decision(s) approved: in force now")


@decisions.command("drop")
@click.argument("ids", nargs=-1, type=int)
@click.option("--rule", help="Every held decision of this rule.")
@click.option("--reason", required=True)
@with_settings
def decisions_drop(cfg, ids, rule, reason):
    """Revoke decisions the circuit breaker held (the rule misfired: fix it too)."""
    from enforcer.changes import drop
    click.echo(f"{_held_change(cfg, drop, ids, rule, reason)} held decision(s) dropped")


@cli.command()
@click.argument("scope", type=SCOPE)
@click.argument("value")
@click.option("--tier", required=True, help="throttled, heavy, authenticated, unlimited, or one of yours.")
@click.option("--duration", default="24h", show_default=True)
@click.option("--reason", required=True)
@with_settings
def assign(cfg, scope, value, tier, duration, reason):
    """Put an entity in a tier (a throttle, or a boost for a generous tier)."""
    from enforcer.changes import add_decision, assignment_effect
    new = _change(cfg, add_decision, scope, value, assignment_effect(tier), duration, reason, tier=tier)
    click.echo(f"decision #{new}")


@cli.group()
def images():
    """The image lists: allowed, unlimited (no rate limit), blocked. CRProxy's patterns:
    `*` one path segment, `**` any depth, docker.io/x is docker.io/library/x."""


@images.command("add")
@click.argument("name", type=click.Choice(["allowed", "unlimited", "blocked"]))
@click.argument("patterns", nargs=-1, required=True)
@click.option("--reason", required=True)
@with_settings
def images_add(cfg, name, patterns, reason):
    from enforcer.changes import change_images
    _change(cfg, change_images, name, list(patterns), True, reason)
    click.echo(f"{len(patterns)} pattern(s) on the {name} list")


@images.command("remove")
@click.argument("name", type=click.Choice(["allowed", "unlimited", "blocked"]))
@click.argument("patterns", nargs=-1, required=True)
@click.option("--reason", required=True)
@with_settings
def images_remove(cfg, name, patterns, reason):
    from enforcer.changes import change_images
    _change(cfg, change_images, name, list(patterns), False, reason)
    click.echo(f"{len(patterns)} pattern(s) off the {name} list")


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_settings
def images_list(cfg, as_json):
    store = open_or_fail(cfg.db)
    try:
        rows = store.execute("select list, pattern, reason from image_lists order by list, pattern")
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([dict(zip(["list", "pattern", "reason"], r)) for r in rows]))
        return
    for lst, pattern, reason in rows:
        click.echo(f"{lst:<10} {pattern}  ({reason})")


@cli.group()
def tiers():
    """Rate tiers: requests a minute and burst, concurrent requests, bytes a second per blob, bytes per window."""


@tiers.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_settings
def tiers_list(cfg, as_json):
    store = open_or_fail(cfg.db)
    try:
        rows = store.execute("""
            select name, requests_per_minute, burst, concurrent, blob_bytes_per_second, window_bytes, window_seconds
            from tiers order by name""")
        defaults = dict(store.execute("select key, value from kv where key like '%_tier'"))
    finally:
        store.close()
    cols = ["name", "requests_per_minute", "burst", "concurrent", "blob_bytes_per_second", "window_bytes",
            "window_seconds"]
    if as_json:
        click.echo(json.dumps({"tiers": [dict(zip(cols, r)) for r in rows], "defaults": defaults}))
        return
    for r in rows:
        click.echo("  ".join(f"{c}={v if v is not None else '-'}" for c, v in zip(cols, r)))
    click.echo(f"anonymous clients: {defaults.get('anonymous_tier')}, logged-in users: {defaults.get('authenticated_tier')}")


@tiers.command("set")
@click.argument("name")
@click.option("--rpm", "requests_per_minute", type=int, help="Requests a minute (none: unlimited).")
@click.option("--burst", type=int, help="Requests taken at once above the rate (nginx limit_req burst, nodelay; "
                                        "none: twice --rpm).")
@click.option("--concurrent", type=int)
@click.option("--blob-rate", "blob_bytes_per_second", type=int, help="Bytes a second per blob download.")
@click.option("--window-bytes", type=int)
@click.option("--window-seconds", type=int)
@click.option("--reason", required=True)
@with_settings
def tiers_set(cfg, name, reason, **limits):
    """Define or change a tier (every limit not given is unlimited)."""
    from enforcer.changes import set_tier
    _change(cfg, set_tier, name, limits, reason)
    click.echo(f"tier {name} set")


@cli.group()
def budget():
    """The monthly traffic budget."""


@budget.command("set")
@click.argument("tib", type=float)
@click.option("--reason", required=True)
@with_settings
def budget_set(cfg, tib, reason):
    from enforcer.changes import set_budget
    _change(cfg, set_budget, tib, reason)
    click.echo(f"monthly budget {tib} TiB")

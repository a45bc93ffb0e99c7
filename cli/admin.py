"""Admin changes from the command line: the same operations as /v1/admin, audited as cli:<user>.
While `pullwarden serve` holds the DuckDB file they go through its API instead (with an admin
key: PULLWARDEN_API_KEY), and are audited under that key's name."""
from __future__ import annotations

import json

import click

from cli.app import cli, fail, with_settings
from cli.remote import apply_change, call, local_store
from cli.detect import decisions


SCOPE = click.Choice(["ip", "range", "asn", "user"])
FORCE_HELP = ("{verb} anyway a range wider than widest_ipv4/widest_ipv6, loopback, link-local, unspecified or "
              "multicast space, this server or a trusted proxy (the audit log says it was forced).")


def _guard(cfg) -> dict:
    from enforcer.changes import guard
    try:
        return guard(cfg)
    except ValueError as e:
        fail(str(e))


@cli.command()
@click.argument("scope", type=SCOPE)
@click.argument("value")
@click.option("--duration", default="24h", show_default=True, help="30m, 24h, 7d… (at most 3650d)")
@click.option("--reason", required=True)
@click.option("--force", is_flag=True, help=FORCE_HELP.format(verb="Ban"))
@with_settings
def ban(cfg, scope, value, duration, reason, force):
    """Ban an address, range, ASN or user by hand. An allowlisted one is refused."""
    from enforcer.changes import add_decision
    new = apply_change(cfg, add_decision, scope, value, 'ban', duration, reason, guard=_guard(cfg), force=force,
                  remote=("POST", "/v1/admin/bans", {"scope": scope, "value": value, "duration": duration,
                                                     "reason": reason, "force": force}, lambda r: r["id"]))
    click.echo(f"decision #{new}")


@cli.command()
@click.argument("decision_id", type=int)
@click.option("--reason", required=True)
@with_settings
def unban(cfg, decision_id, reason):
    """End a decision (a ban or a tier assignment) now."""
    from enforcer.changes import revoke
    apply_change(cfg, revoke, decision_id, reason,
            remote=("DELETE", f"/v1/admin/decisions/{decision_id}", {"reason": reason}, lambda r: None))
    click.echo(f"decision #{decision_id} revoked")


def _held_change(cfg, fn, ids, rule, reason) -> int:
    """approve or drop: the decisions named, or every held decision of ``rule``."""
    from enforcer.changes import held_ids
    if bool(ids) == bool(rule):
        fail("name the held decisions: their ids, or --rule for all of a rule's")
    if rule:
        store = local_store(cfg)
        if store is None:           # serve holds the file: the held decisions it lists
            ids = sorted(d["id"] for d in call(cfg, "GET", "/v1/stats/decisions?held=true&limit=100000")
                         if d["rule"] == rule)
        else:
            try:
                ids = held_ids(store, rule)
            finally:
                store.close()
        if not ids:
            fail(f"rule {rule} has no held decisions")
    action = "approve" if fn.__name__ == "approve" else "drop"
    return apply_change(cfg, fn, list(ids), reason,
                        remote=("POST", f"/v1/admin/decisions/{action}", {"ids": list(ids), "reason": reason},
                                lambda r: r["approved"] if action == "approve" else r["revoked"]))


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
@click.option("--force", is_flag=True, help=FORCE_HELP.format(verb="Assign"))
@with_settings
def assign(cfg, scope, value, tier, duration, reason, force):
    """Put an entity in a tier (a throttle, or a boost for a generous tier). The same guard as
    a ban's: the whole address space never, and our own or no client's addresses with --force."""
    from enforcer.changes import add_decision, assignment_effect
    new = apply_change(cfg, add_decision, scope, value, assignment_effect(tier), duration, reason, tier=tier,
                  guard=_guard(cfg), force=force,
                  remote=("POST", "/v1/admin/assignments", {"scope": scope, "value": value, "duration": duration,
                                                            "reason": reason, "tier": tier, "force": force},
                          lambda r: r["id"]))
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
    added, there = apply_change(cfg, change_images, name, list(patterns), True, reason,
                           remote=("POST", f"/v1/admin/images/{name}", {"patterns": list(patterns), "reason": reason},
                                   lambda r: (r["changed"], r["unchanged"])))
    click.echo(f"{added} pattern(s) added to the {name} list" + (f", {there} already on it (kept as they were)"
                                                                    if there else ""))


@images.command("remove")
@click.argument("name", type=click.Choice(["allowed", "unlimited", "blocked"]))
@click.argument("patterns", nargs=-1, required=True)
@click.option("--reason", required=True)
@with_settings
def images_remove(cfg, name, patterns, reason):
    from enforcer.changes import change_images
    removed, _ = apply_change(cfg, change_images, name, list(patterns), False, reason,
                         remote=("DELETE", f"/v1/admin/images/{name}", {"patterns": list(patterns), "reason": reason},
                                 lambda r: (r["changed"], r["unchanged"])))
    click.echo(f"{removed} pattern(s) removed from the {name} list")


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_settings
def images_list(cfg, as_json):
    """The allowed, unlimited and blocked lists (through the API while serve runs)."""
    store = local_store(cfg)
    if store is None:
        lists = call(cfg, "GET", "/v1/stats/images")
        rows = [(name, e["pattern"], e["reason"]) for name in sorted(lists) for e in lists[name]]
    else:
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
    """The tiers and the defaults (through the API while serve runs)."""
    from reports.queries import TIER_COLUMNS, tier_table
    store = local_store(cfg)
    if store is None:
        got = call(cfg, "GET", "/v1/stats/tiers")
        rows, defaults = [[t[c] for c in TIER_COLUMNS] for t in got["tiers"]], got["defaults"]
    else:
        try:
            got = tier_table(store)
            rows, defaults = [[t[c] for c in TIER_COLUMNS] for t in got["tiers"]], got["defaults"]
        finally:
            store.close()
    cols = TIER_COLUMNS
    if as_json:
        click.echo(json.dumps({"tiers": [dict(zip(cols, r)) for r in rows], "defaults": defaults}))
        return
    for r in rows:
        click.echo("  ".join(f"{c}={v if v is not None else '-'}" for c, v in zip(cols, r)))
    click.echo(f"anonymous clients: {defaults.get('anonymous_tier')}, logged-in users: {defaults.get('authenticated_tier')}")


@tiers.command("set")
@click.argument("name")
@click.option("--rpm", "requests_per_minute", type=click.IntRange(0, 10**6),
              help="Requests a minute (nginx limit_req rate).")
@click.option("--burst", type=click.IntRange(0, 10**6), help="Requests taken at once above the rate (nginx "
              "limit_req burst, nodelay; unset: twice --rpm).")
@click.option("--concurrent", type=click.IntRange(0, 10**5), help="Requests in flight per address (limit_conn).")
@click.option("--blob-rate", "blob_bytes_per_second", type=click.IntRange(0, 10**12),
              help="Bytes a second per response (nginx limit_rate; CRProxy --blobs-speed-limit).")
@click.option("--window-bytes", type=click.IntRange(0, 10**16),
              help="Bytes per window per address (CRProxy --ips-speed-limit BYTES/WINDOW).")
@click.option("--window-seconds", type=click.IntRange(0, 10**7), help="That window, in seconds.")
@click.option("--reason", required=True)
@with_settings
def tiers_set(cfg, name, reason, **limits):
    """Define a tier or change some of its limits. The limits given are set (0: unlimited), the
    others keep their value (a new tier's: unlimited)."""
    from enforcer.changes import set_tier
    given = {k: (v or None) for k, v in limits.items() if v is not None}
    apply_change(cfg, set_tier, _tier_name(name), given, reason,
            remote=("PUT", f"/v1/admin/tiers/{name}", {**given, "reason": reason}, lambda r: None))
    click.echo(f"tier {name} set")


def _tier_name(name: str) -> str:
    """Checked here as well as by the change: the name goes into the API's URL."""
    from core.values import tier_name
    try:
        return tier_name(name)
    except ValueError as e:
        fail(str(e))


@tiers.command("delete")
@click.argument("name")
@click.option("--reason", required=True)
@with_settings
def tiers_delete(cfg, name, reason):
    """Remove a tier. Refused while anything uses it (a decision in force or held, a default
    tier, the setting budget_tighten_tier, a rule), naming each use."""
    from enforcer.changes import delete_tier
    from urllib.parse import quote
    # any name the store holds, one from before names were checked too: that is how it goes
    apply_change(cfg, delete_tier, name, reason, settings=cfg,
                 remote=("DELETE", f"/v1/admin/tiers/{quote(name, safe='')}", {"reason": reason}, lambda r: None))
    click.echo(f"tier {name} deleted")


@cli.group()
def budget():
    """The monthly traffic budget."""


@budget.command("set")
@click.argument("tib", type=float)
@click.option("--reason", required=True)
@with_settings
def budget_set(cfg, tib, reason):
    from enforcer.changes import set_budget
    apply_change(cfg, set_budget, tib, reason,
            remote=("PUT", "/v1/admin/budget", {"monthly_tib": tib, "reason": reason}, lambda r: None))
    click.echo(f"monthly budget {tib} TiB")

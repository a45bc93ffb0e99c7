"""Commands of the detection stage: detect, decisions, explain, backtest, allow."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import click

from cli.app import cli, fail, now_option, run_now, with_settings
from core.clock import parse_time
from core.when import human


def _when(text: str | None) -> datetime | None:
    """An ISO 8601 time as naive UTC (a time without offset is taken as UTC)."""
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as e:
        fail(str(e))


def _rules(store, cfg, packs=None):
    from rules.engine import RuleError, load_rules
    try:
        return load_rules(store, packs, cfg.rules_dir or None)
    except RuleError as e:
        fail(str(e))


@cli.command()
@now_option
@click.option("--rules", "rules_dir", help="Site rules folder (adds to and overrides the shipped packs).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def detect(cfg, as_json):
    """Roll up new events, evaluate every rule and turn findings into decisions.

    Judges the windows that end now (the wall clock). To replay logs read from the past, pin
    the time: `--now latest` (the newest ingested event) or `--now 2024-11-20T12:00`; a replay
    gives the verdicts the traffic got live.
    """
    from cli.remote import at_server_clock, call, local_store
    from rules.detect import detect as run_detect, last_full_pass, latest_event_time, pass_report
    store = local_store(cfg)
    if store is None:
        at_server_clock(cfg)
        out = call(cfg, "POST", "/v1/admin/detect", {})
    else:
        try:
            rules = _rules(store, cfg)
            at = run_now(cfg, store, enforced=True)
            latest = latest_event_time(store)
            if not as_json and not cfg.now and latest is not None and at - latest > timedelta(days=1):
                click.echo(f"notice: the newest event is from {human(latest, cfg.report_timezone)}, {(at - latest).days} "
                           "day(s) ago: judged at the wall clock it is outside the windows; to replay old logs use "
                           "--now latest", err=True)
            # a full pass, as serve's: the bans its fresh passes made since its last one count
            out = pass_report(run_detect(store, cfg, rules, at, since=last_full_pass(store, at)))
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(out, default=str))
        return
    for f in out["findings"]:
        flag = " (simulated)" if f["simulated"] else ""
        click.echo(f"  {f['rule']}{flag}: {f['kind']} {f['entity']}: {f['reason']}")
    for f in out["allowlisted"]:
        click.echo(f"  allowlisted, no decision: {f['entity']} ({f['rule']}): {f['why']}")
    for f in out["unbanned"]:
        click.echo(f"  unbanned, no decision: {f['entity']} ({f['rule']}): {f['why']}")
    for h in out["held"]:
        click.echo(f"HELD rule {h['rule']}: {len(h['ids'])} new bans held ({h['reason']}); approve with "
                   f"`pullwarden decisions approve --rule {h['rule']} --reason ...`, or drop them with "
                   f"`pullwarden decisions drop --rule {h['rule']} --reason ...`")
    summary = out["summary"]
    click.echo(f"findings {summary['findings']}  new decisions {_said(summary['new'])}  "
               f"extended {_said(summary['extended'])}")


def _said(c: dict) -> str:
    if not c["total"]:
        return "0"
    parts = [f"{c['enforced']} enforced"]
    if c["held"]:
        rules = ", ".join(f"rule {rule}: {n}" for rule, n in c["held_by_rule"].items())
        parts.append(f"{c['held']} held by the circuit breaker ({rules})")
    if c["simulated"]:
        parts.append(f"{c['simulated']} simulated")
    return f"{c['total']}: " + ", ".join(parts)


@cli.group()
def decisions():
    """Decisions: bans, throttles and boosts, with their reasons."""


@decisions.command("list")
@click.option("--active", is_flag=True,
              help="Only decisions in force (not revoked, not expired, not simulated, not held).")
@click.option("--held", is_flag=True,
              help="Only decisions the circuit breaker holds, waiting for `decisions approve` or `drop`.")
@now_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@with_settings
def decisions_list(cfg, active, held, as_json):
    """List decisions, newest first."""
    if active and held:
        fail("--active and --held exclude each other: a held decision is not in force")
    from cli.remote import local_store
    store = local_store(cfg)
    rows, at = (_decisions_from_server(cfg, active, held) if store is None else
                _decisions_from_store(cfg, store, active, held))
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        state = ("revoked" if r["revoked_at"] else "simulated" if r["simulated"] else
                 "expired" if r["until"] <= at else "held" if r["held"] else "active")
        tier = f":{r['tier']}" if r["tier"] else ""
        why = f" (held: {r['held']})" if state == "held" else ""
        click.echo(f"#{r['id']} {state:9} {r['effect']}{tier} {r['scope']} {r['value']} "
                   f"until {human(r['until'], cfg.report_timezone)} "
                   f"[{r['rule'] or r['origin']}] {r['reason']}{why}")


def _decisions_from_server(cfg, active: bool, held: bool) -> tuple[list[dict], datetime]:
    """While serve holds the file: its /v1/stats/decisions (a viewer key), at its wall clock."""
    from cli.remote import at_server_clock, call
    from core.clock import utcnow
    at_server_clock(cfg)
    rows = call(cfg, "GET", f"/v1/stats/decisions?active={str(active).lower()}&held={str(held).lower()}"
                            "&limit=100000")
    for r in rows:
        for k in ("created_at", "until", "revoked_at"):
            r[k] = datetime.fromisoformat(r[k]) if r[k] else None
    return rows, utcnow()


def _decisions_from_store(cfg, store, active: bool, held: bool) -> tuple[list[dict], datetime]:
    try:
        at = run_now(cfg, store)
        live = "where revoked_at is null and created_at <= $now and until > $now"
        cond = (f"{live} and not simulated and held is null" if active else
                f"{live} and held is not null" if held else "")
        cols = ["id", "seq", "scope", "value", "effect", "tier", "rule", "origin", "reason", "created_at", "until",
                "revoked_at", "simulated", "held"]
        rows = [dict(zip(cols, r)) for r in store.execute(
            f"select {', '.join(cols)} from decisions {cond} order by seq desc", {"now": at} if cond else None)]
    finally:
        store.close()
    return rows, at


@cli.command()
@click.argument("target")
@now_option
@click.option("--rules", "rules_dir", help="Site rules folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def explain(cfg, target, as_json):
    """Why an address or range gets (or does not get) a decision: every rule's verdict with the
    numbers behind it, the top images and user agents, the hourly profile. While serve holds
    the file, asked of its API (a viewer key), at its wall clock."""
    from cli.remote import at_server_clock, call, local_store
    from rules.explain import explain as run_explain
    store = local_store(cfg)
    if store is None:
        from urllib.parse import quote
        at_server_clock(cfg)
        report = call(cfg, "GET", f"/v1/stats/explain?target={quote(target, safe='')}")
    else:
        try:
            rules = _rules(store, cfg)
            try:
                report = run_explain(store, cfg, rules, target, run_now(cfg, store))
            except ValueError as e:
                fail(str(e))
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    click.echo(f"{report['entity_kind']} {report['target']} at {human(report['now'], cfg.report_timezone)}")
    if report.get("allowlisted"):
        click.echo(f"  ALLOWLISTED: {report['allowlisted']} (no rule decides on it; bans and throttles skip it)")
    for d in report.get("in_force") or []:
        what = f"{d['effect']}:{d['tier']}" if d["tier"] else d["effect"]
        state = f"HELD by the circuit breaker ({d['held']})" if d["held"] else "simulated" if d["simulated"] else "in force"
        click.echo(f"  {state}: #{d['id']} {what} {d['scope']} {d['value']} until {human(d['until'], cfg.report_timezone)} "
                   f"[{d['rule'] or d['origin']}] {d['reason']}")
    if not report.get("in_force"):
        click.echo("  no decision in force")
    for v in report["verdicts"]:
        mark = "MATCH" if v["match"] else "-    "
        sim = " (simulated)" if v["simulated"] else ""
        click.echo(f"  {mark} {v['rule']}{sim} [{v['window']}]: {v['reason'] or 'no traffic in the window'}")
        if v.get("failing"):
            from rules.nearest import describe
            click.echo(f"        {len(v['failing'])} of {v['conditions']} conditions fail; nearest: "
                       f"{describe(v['failing'][0])}")
        if v.get("unbanned"):
            click.echo(f"        {v['unbanned']}")
    click.echo("  top images: " + ", ".join(f"{i['image']} ({i['requests']})" for i in report["top_images"]))
    click.echo("  top user agents: " + ", ".join(f"{u['user_agent']} ({u['requests']})" for u in report["top_user_agents"]))
    click.echo("  requests per hour (UTC, last 24h): " + " ".join(str(n) for n in report["hourly"]))


@cli.command()
@click.option("--from", "start", required=True, help="Start of the replay, ISO 8601 UTC.")
@click.option("--to", "end", required=True, help="End of the replay, ISO 8601 UTC.")
@click.option("--rules", "packs", multiple=True,
              help="Rule packs or folders to compare (repeatable; default: every shipped pack).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def backtest(cfg, start, end, packs, as_json):
    """Replay detection hour by hour over stored history, without touching live decisions:
    per rule, the entities flagged, their bytes, and the bytes enforcement would have saved."""
    from cli.remote import call, local_store
    from rules.backtest import backtest as run_backtest
    store = local_store(cfg)
    if store is None:                   # serve holds the file: its backtest (a viewer key, every shipped pack)
        from urllib.parse import urlencode
        if packs:
            fail(f"{cfg.db} is held by a running server, whose backtest replays the shipped packs and the site "
                 "folder: --rules needs the server stopped")
        report = call(cfg, "GET", "/v1/stats/backtest?" + urlencode({"start": start, "end": end}))
    else:
        try:
            rules = _rules(store, cfg, list(packs) or None)
            report = run_backtest(store, cfg, rules, _when(start), _when(end))
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    click.echo(f"{'rule':<22}{'pack':<19}{'action':<19}{'flagged':>8}{'GiB flagged':>13}{'GiB saved':>11}")
    for r in report["rules"]:
        click.echo(f"{r['rule']:<22}{r['pack']:<19}{r['action']:<19}{r['entities']:>8}"
                   f"{r['bytes'] / (1 << 30):>13.1f}{r['bytes_saved'] / (1 << 30):>11.1f}")
    for pack, p in report["packs"].items():
        click.echo(f"pack {pack}: {p['entities']} entities banned or throttled, "
                   f"{p['bytes_saved'] / (1 << 30):.1f} GiB saved of {report['bytes'] / (1 << 30):.1f} GiB served")


@cli.group()
def allow():
    """The allowlist: addresses, ranges, ASNs and users that are never banned or throttled."""


@allow.command("add")
@click.argument("kind", type=click.Choice(["ip", "cidr", "asn", "user"]))
@click.argument("value")
@click.option("--reason", required=True, help="Why (kept with the entry).")
@click.option("--until", help="Expiry, ISO 8601 UTC (default: never).")
@with_settings
def allow_add(cfg, kind, value, reason, until):
    """Add an entry; active decisions it covers are revoked at once."""
    from cli.remote import apply_change
    from enforcer.changes import allow as add, guard
    try:
        limits = guard(cfg)
    except ValueError as e:
        fail(str(e))
    # while serve runs, through its API (which takes no --until: entries made there do not expire)
    remote = None if until else ("POST", "/v1/admin/allowlist", {"kind": kind, "value": value, "reason": reason},
                                 lambda r: r["revoked"])
    revoked = apply_change(cfg, add, kind, value, reason, until=_when(until), guard=limits, remote=remote)
    click.echo(f"allowed {kind} {value}; {revoked} active decision(s) revoked")


@allow.command("remove")
@click.argument("kind", type=click.Choice(["ip", "cidr", "asn", "user"]))
@click.argument("value")
@click.option("--reason", default="removed from the command line", show_default=True, help="For the audit log.")
@with_settings
def allow_remove(cfg, kind, value, reason):
    """Remove an entry (audited; through the API while serve runs)."""
    from cli.remote import apply_change
    from enforcer.changes import disallow
    apply_change(cfg, disallow, kind, value, reason,
                 remote=("DELETE", "/v1/admin/allowlist", {"kind": kind, "value": value, "reason": reason},
                         lambda r: None))
    click.echo(f"removed {kind} {value}")


@allow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@with_settings
def allow_list(cfg, as_json):
    """List the entries (through the API while serve runs)."""
    from cli.remote import call, local_store
    store = local_store(cfg)
    if store is None:
        rows = call(cfg, "GET", "/v1/admin/allowlist")
    else:
        try:
            rows = store.records("select kind, value, reason, created_at, until from allowlist order by kind, value")
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        click.echo(f"{r['kind']} {r['value']} until {human(r['until'], cfg.report_timezone) or 'forever'}: {r['reason']}")

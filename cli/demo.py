"""The first run: `pullwarden demo` (a month of a small mirror that ends now: generated, ingested,
judged) and what `pullwarden up` shows before it serves."""
from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click

from cli.app import TIB, cli, fail, open_or_fail, with_settings

SHOWN = 12          # decided entities printed; the rest are a command away
# The demo month serves about 1 TiB a day: a budget it crosses, as the mirror that started the
# project crossed its own (~4 TiB a day against what it could pay for). Set only on a database
# whose budget nobody has set; `pullwarden budget set` changes it like any other.
DEMO_BUDGET_TIB = 20.0


def demo_settings(cfg) -> None:
    """The demo's own ASN and country databases (sample_logs/demo_geo.py), unless the operator
    configured theirs: its AS and country breakdowns then have names."""
    from sample_logs.demo_geo import ASN_DB, COUNTRY_DB
    for name, path in (("asn_db", ASN_DB), ("country_db", COUNTRY_DB)):
        if cfg.origin.get(name) == "default" and not cfg.values.get(name):
            cfg.values[name] = str(path)
            cfg.origin[name] = "the demo"


def demo_budget(store, now) -> None:
    """The demo's budget, on a database still at the stock one that no one has set."""
    from enforcer.changes import set_budget
    stock = store.value("select value from kv where key = 'monthly_budget_tib'") == "100"
    if stock and not store.value("select count(*) from audit where action = 'set budget'"):
        set_budget(store, "pullwarden demo", DEMO_BUDGET_TIB,
                   "the demo month's budget: a mirror over budget, as the one that started the project", now)


def month_folder(cfg) -> Path:
    """The demo month lives beside the database, never in the checkout's sample_logs/."""
    return Path(cfg.db).parent / "sample_logs"


def first_run(cfg, store, patterns: list[str], generate: bool, as_json: bool = False) -> dict:
    """Write the demo month (when asked), ingest ``patterns``, detect at the wall clock; what
    happened, for the operator."""
    from core.clock import utcnow
    from ingest.pipeline import IngestError, Ingester
    from reports.queries import daily_totals
    from rules.detect import detect
    from rules.engine import RuleError, load_rules
    out: dict = {}
    now = utcnow()
    if generate:
        from sample_logs.month import DAYS, write_month
        demo_budget(store, now)
        written = write_month(month_folder(cfg), now)
        out["generated"] = {"folder": str(month_folder(cfg)), "days": DAYS, "files": written.files,
                            "lines": written.lines}
    try:
        ingester = Ingester(store, cfg)
        plan = ingester.plan(patterns)
        total = sum(max(0, p.stat().st_size - (r["read_offset"] if r and p.suffix != ".gz" else 0))
                    for p, r, _ in plan)
        with click.progressbar(length=total, label="ingest", file=sys.stderr,
                               hidden=as_json or not sys.stderr.isatty()) as bar:
            ingester.progress = bar.update
            report = ingester.run(patterns, plan)
        rules = load_rules(store, None, cfg.rules_dir or None)
    except (IngestError, RuleError) as e:
        fail(str(e))
    d = report.as_dict()
    out["ingested"] = {k: d[k] for k in ("files", "lines", "events", "rejected", "seconds")}
    result = detect(store, cfg, rules, now)
    # the hourly roll-up (detect made it), not the events: a redirected blob's bytes are in the
    # object store's log, joined there to the address that asked
    hour = now.replace(minute=0, second=0, microsecond=0)
    for name, since in (("last_30_days", hour - timedelta(days=30)), ("month_to_date", hour.replace(day=1, hour=0))):
        t = daily_totals(store, since, None)
        out[name] = {"since": since.isoformat(timespec="seconds"), "tib": round(t["bytes"] / TIB, 3),
                     "addresses": t["unique_ips"], "object_tib": round(t["object_bytes"] / TIB, 3),
                     "unjoined_gib": round(t["unjoined_bytes"] / (1 << 30), 2)}
    out["now"] = now.isoformat(timespec="seconds")
    out["timezone"] = cfg.report_timezone or "UTC"
    out["held"] = result.held_reasons        # one line per rule the circuit breaker held, or None
    out["in_force"] = store.records("""
        select id, effect, tier, scope, value, rule, reason, until from decisions
        where revoked_at is null and held is null and not simulated and until > ? order by effect, scope, value, rule""", [now])
    out["budget"] = budget_outlook(cfg, store, now)
    return out


def budget_outlook(cfg, store, now) -> dict | None:
    """The month against the budget, the guard's level and its action, and what the guard's tier
    for anonymous traffic would have saved (the what-if)."""
    from reports import budget, guard, whatif
    try:
        s = budget.status(store, cfg.report_timezone, now)
    except ValueError as e:         # report_timezone unknown: said, the rest of the first run stands
        return {"error": str(e)}
    if s["month"] is None:
        return None
    anonymous = store.value("select value from kv where key = 'anonymous_tier'") or "anonymous"
    action = guard.outlook(s, guard.memory(store), cfg.budget_tighten, cfg.budget_tighten_tier, anonymous)
    out = {"month": s["month"], "budget_tib": round(s["budget_bytes"] / TIB, 3),
           "used_tib": round(s["used_bytes"] / TIB, 3), "projected_tib": round(s["projected_bytes"] / TIB, 3),
           "projected_share": s["guard"]["projected_share"], "level": s["guard"]["level"], "action": action,
           "action_text": guard.sentence(action)}
    tier = cfg.budget_tighten_tier
    row = store.execute(f"select {', '.join(whatif.LIMITS)} from tiers where name = ?", [tier])
    if row and tier != anonymous:
        w = whatif.whatif(store, cfg.report_timezone, now, dict(zip(whatif.LIMITS, row[0])))
        out["whatif"] = {"tier": tier, "saved_tib": round(w["saved_bytes"] / TIB, 3),
                         "projected_tib_after": round(w["projected_bytes_after"] / TIB, 3),
                         "level_after": w["guard_after"]}
    return out


def show(out: dict) -> None:
    g = out.get("generated")
    if g:
        click.echo(f"demo month: {g['days']} days of a small mirror up to now in {g['folder']}/ "
                   f"({g['lines']:,} new lines in {g['files']} files; seeded, so re-runs only add today's)")
    i = out["ingested"]
    click.echo(f"ingested {i['lines']:,} lines from {i['files']} files ({i['rejected']} rejected) in {i['seconds']} s")
    for label, name in (("last 30 days", "last_30_days"), ("this month", "month_to_date")):
        m = out[name]
        objects = (f", {m['object_tib']} TiB of it from object-storage logs ({m['unjoined_gib']} GiB not joined to "
                   "a request)" if m["object_tib"] else "")
        click.echo(f"{label}: {m['tib']} TiB served to {m['addresses']:,} addresses{objects}")
    b = out.get("budget")
    if b and "error" in b:
        click.echo(f"budget: {b['error']}")
    elif b:
        click.echo(f"budget {b['month']}: {b['used_tib']} of {b['budget_tib']:g} TiB used, {b['projected_tib']} TiB "
                   f"projected ({ui_pct(b['projected_share'])} of the budget); guard: {b['level']}, {b['action_text']}")
        w = b.get("whatif")
        if w:
            click.echo(f"what-if: anonymous traffic in tier {w['tier']} would have saved {w['saved_tib']} TiB this "
                       f"month; projected {w['projected_tib_after']} TiB (guard: {w['level_after']})")
    if out["held"]:
        click.echo(f"HELD by the circuit breaker: {out['held']}")
    from core.decided import by_entity
    from core.when import human
    tz = out.get("timezone", "UTC")
    decided = by_entity(out["in_force"])
    click.echo(f"detection at {human(out['now'], tz)} (the wall clock): {len(out['in_force'])} decision(s) in force "
               f"on {len(decided)} entit{'y' if len(decided) == 1 else 'ies'}")
    for g in decided[:SHOWN]:
        what = f"{g['effect']}:{g['tier']}" if g["tier"] else g["effect"]
        more = f" (+{len(g['reasons']) - 1} more: pullwarden explain {g['value']})" if len(g["reasons"]) > 1 else ""
        click.echo(f"  {what:<19} {g['scope']} {g['value']:<20} until {human(g['until'], tz)}  "
                   f"[{', '.join(g['rules'])}] {g['reason']}{more}")
    if len(decided) > SHOWN:
        click.echo(f"  … and {len(decided) - SHOWN} more: pullwarden decisions list --active")


def ui_pct(share) -> str:
    return "—" if share is None else f"{share * 100:.0f}%"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def demo(cfg, as_json):
    """A first look, on a month of a small mirror that ends now: writes it (seeded: CI storms,
    a reseller, scanners, rotation over a /24 and a /64, beside office NATs, a cluster, a
    Harbor cache, hosted CI, an AI team and light users) under data/sample_logs/, ingests it,
    detects at the wall clock and prints what is in force and why. Run it again later: only the
    new lines of today are added. `pullwarden up` then serves the result."""
    demo_settings(cfg)
    store = open_or_fail(cfg.db)
    try:
        out = first_run(cfg, store, [str(month_folder(cfg))], generate=True, as_json=as_json)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(out, default=str))
    else:
        show(out)
        click.echo("next: pullwarden up (the API serving this policy) · pullwarden explain ADDRESS · pullwarden stats")

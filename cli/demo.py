"""The first run: `pullwarden demo` (a month of a small mirror that ends now: generated, ingested,
judged) and what `pullwarden up` shows before it serves."""
from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click

from cli.app import TIB, cli, fail, open_or_fail, with_settings

SHOWN = 12          # decisions printed; the rest are a command away


def month_folder(cfg) -> Path:
    """The demo month lives beside the database, never in the checkout's sample_logs/."""
    return Path(cfg.db).parent / "sample_logs"


def first_run(cfg, store, patterns: list[str], generate: bool, as_json: bool = False) -> dict:
    """Write the demo month (when asked), ingest ``patterns``, detect at the wall clock; what
    happened, for the operator."""
    from core.clock import utcnow
    from ingest.pipeline import IngestError, Ingester
    from rules.detect import detect
    from rules.engine import RuleError, load_rules
    out: dict = {}
    now = utcnow()
    if generate:
        from sample_logs.month import DAYS, write_month
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
    for name, since in (("last_30_days", now - timedelta(days=30)),
                        ("month_to_date", now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))):
        served, addresses = store.execute("""select coalesce(sum(bytes), 0), count(distinct client_ip) from events
                                             where ts >= ? and ts < ?""", [since, now])[0]
        out[name] = {"since": since.isoformat(timespec="seconds"), "tib": round(served / TIB, 3),
                     "addresses": addresses}
    out["now"] = now.isoformat(timespec="seconds")
    out["held"] = result.held_reasons        # one line per rule the circuit breaker held, or None
    out["in_force"] = store.records("""
        select id, effect, tier, scope, value, rule, reason, until from decisions
        where revoked_at is null and held is null and not simulated and until > ? order by effect, scope, value, rule""", [now])
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
        click.echo(f"{label}: {m['tib']} TiB served to {m['addresses']:,} addresses")
    if out["held"]:
        click.echo(f"HELD by the circuit breaker: {out['held']}")
    decisions = out["in_force"]
    click.echo(f"detection at {out['now']} UTC (the wall clock): {len(decisions)} decision(s) in force")
    for r in decisions[:SHOWN]:
        what = f"{r['effect']}:{r['tier']}" if r["tier"] else r["effect"]
        click.echo(f"  #{r['id']:<5} {what:<19} {r['scope']} {r['value']:<20} until {r['until']:%Y-%m-%d %H:%M}  "
                   f"[{r['rule']}] {r['reason']}")
    if len(decisions) > SHOWN:
        click.echo(f"  … and {len(decisions) - SHOWN} more: pullwarden decisions list --active")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def demo(cfg, as_json):
    """A first look, on a month of a small mirror that ends now: writes it (seeded: CI storms,
    a reseller, scanners, rotation over a /24 and a /64, beside office NATs, a cluster, a
    Harbor cache, hosted CI, an AI team and light users) under data/sample_logs/, ingests it,
    detects at the wall clock and prints what is in force and why. Run it again later: only the
    new lines of today are added. `pullwarden up` then serves the result."""
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

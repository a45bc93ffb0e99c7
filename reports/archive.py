"""Monthly reports, made and kept: a closed month's report is frozen in the `reports` table
(migration 8) with the sha256 of its inputs, and every later run gives its stored bytes.

Why a table and not files beside the database: the report then travels with the data it was
computed from (a backup or a copy of the file has its reports), and while `serve` holds the
file, the API serves it from there like everything else (one door to the state).

Its inputs are every figure the store gives for the month and the settings that shape them
(time zone, budget, prices); their hash is stored with it. When a later run computes a
different hash (late logs, a changed budget) the frozen report stays and the run says so
(``stale``); ``refresh`` replaces it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from reports import monthly, render

KINDS = ("json", "csv", "html", "pdf")


@dataclass
class Report:
    month: str
    timezone: str
    inputs_sha256: str
    partial: bool
    frozen: bool
    stale: bool                       # frozen, but the store now gives other figures
    outputs: dict                     # kind -> bytes

    def name(self, kind: str) -> str:
        return f"pullwarden-report-{self.month}.{kind}"

    def summary(self) -> dict:
        fig = json.loads(self.outputs["json"])
        return {"month": self.month, "timezone": self.timezone, "partial": self.partial, "frozen": self.frozen,
                "stale": self.stale, "inputs_sha256": self.inputs_sha256, "total_bytes": fig["total_bytes"],
                "budget_bytes": fig["budget_bytes"], "projected_bytes": fig["projected_bytes"]}


def inputs_sha256(fig: dict) -> str:
    return hashlib.sha256(json.dumps(fig, sort_keys=True, default=str).encode()).hexdigest()


def stored(store, month: str, tz: str) -> Report | None:
    rows = store.execute("""select inputs_sha256, json, csv, html, pdf from reports
                            where month = ? and timezone = ?""", [month, tz])
    if not rows:
        return None
    sha, j, c, h, p = rows[0]
    # a CSV frozen before its cells were neutralised is given out neutralised (render.cell)
    return Report(month, tz, sha, False, True, False,
                  {"json": j.encode(), "csv": render.safe_csv(c).encode(), "html": h.encode(), "pdf": bytes(p)})


def build(store, month: str, cfg, now: datetime, refresh: bool = False, write=None) -> Report:
    """The report of ``month``: computed from ``store``, and, when the month is closed, frozen
    through ``write(fn)`` (fn takes the store to write to; default: ``store``, for a caller that
    holds it)."""
    return finish(prepare(store, month, cfg, now, refresh), write or (lambda fn: fn(store)))


@dataclass
class Prepared:
    month: str
    timezone: str
    figures: dict
    freeze: bool
    frozen: Report | None           # the stored report to give as it is
    now: datetime                   # the run's now: frozen_at


def prepare(store, month: str, cfg, now: datetime, refresh: bool = False) -> Prepared:
    """What needs the store: the figures, their hash, and the frozen report when there is one
    (a reading connection will do; rendering, the slow part, then needs none)."""
    tz = cfg.report_timezone or "UTC"
    fig = monthly.figures(store, month, tz, now, cfg.price_per_tib, cfg.price_currency)
    sha = inputs_sha256(fig)
    fig["inputs_sha256"] = sha
    # a month with no traffic at all is not frozen: its logs may simply not be read yet
    freeze = not fig["partial"] and monthly.closed(month, tz, now) and fig["requests"] > 0
    # no roll-ups left for the month (keep_rollups_days): its frozen report is all there is, and
    # an empty one never replaces it, --refresh or not
    gone = fig["requests"] == 0
    old = stored(store, month, tz) if freeze or gone else None
    if old and gone:
        old.stale = False
    elif old and (old.inputs_sha256 == sha or not refresh):
        old.stale = old.inputs_sha256 != sha
    else:
        old = None
    return Prepared(month, tz, fig, freeze, old, now)


def finish(p: Prepared, write) -> Report:
    """Render the outputs (or give the frozen ones) and freeze a closed month's through ``write``."""
    if p.frozen:
        return p.frozen
    fig = p.figures
    page = render.to_html(fig)
    outputs = {"json": render.to_json(fig).encode(), "csv": render.to_csv(fig).encode(), "html": page.encode(),
               "pdf": render.to_pdf(page)}
    if p.freeze:
        def save(target):
            target.execute("insert or replace into reports values (?, ?, ?, ?, ?, ?, ?, ?)",
                           [p.month, p.timezone, fig["inputs_sha256"], p.now,
                            outputs["json"].decode(), outputs["csv"].decode(), outputs["html"].decode(),
                            outputs["pdf"]])
        write(save)
    return Report(p.month, p.timezone, fig["inputs_sha256"], fig["partial"], p.freeze, False, outputs)


def listing(store, tz: str) -> list[dict]:
    """Months with data (in ``tz``) and the frozen reports, newest first."""
    months = {m for (m,) in store.execute("""select distinct strftime(timezone(?, hour::timestamptz), '%Y-%m')
                                             from facts_hourly""", [tz])}
    frozen = {m: (sha, at) for m, sha, at in store.execute(
        "select month, inputs_sha256, frozen_at from reports where timezone = ?", [tz])}
    return [{"month": m, "timezone": tz, "frozen": m in frozen,
             "inputs_sha256": frozen[m][0] if m in frozen else None,
             "frozen_at": frozen[m][1] if m in frozen else None,
             "files": {k: f"/v1/stats/reports/{m}.{k}" for k in KINDS}}
            for m in sorted(months | set(frozen), reverse=True)]

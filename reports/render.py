"""The monthly report's four outputs from its figures: JSON, CSV, HTML with its charts embedded
as inline SVG (Altair specs drawn by vl-convert: no script, no network, opens offline) and a PDF
of that HTML (WeasyPrint).

Every output is a pure function of the figures: no generation time, no random ids, dicts in
insertion order, so the same figures give the same bytes.
"""
from __future__ import annotations

import csv
import html
import io
import json

from core import countries
from reports.budget import TIB

GIB = 1 << 30


def to_json(fig: dict) -> str:
    return json.dumps(fig, indent=1, ensure_ascii=False) + "\n"


def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, "" if value is None else value))


# A spreadsheet takes a cell that starts with one of these for a formula (OWASP, "CSV Injection").
# Registry names, images and users in the report come from request paths and logs, so whoever
# sends a request to the mirror chooses them: `/v2/=1+1.io/...` would give a cell `=1+1.io`.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value):
    """A CSV cell that a spreadsheet shows as text: a string that would start a formula gets a
    leading single quote, as OWASP recommends (numbers stay numbers: -3 is not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(fig: dict) -> str:
    """Every figure of the JSON as one row: the section it is in, and its path and value (the
    JSON's paths, so a spreadsheet filter on `section` gives one table). Every cell goes through
    ``cell``: no cell starts a formula."""
    rows: list = []
    _flatten("", fig, rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "path", "value"])
    for path, value in rows:
        w.writerow([cell(path.split(".")[0].split("[")[0]), cell(path), cell(value)])
    return buf.getvalue()


def safe_csv(text: str) -> str:
    """A CSV written before ``cell`` existed (a report frozen by an earlier release) with every
    cell passed through it; the same text when no cell needed it."""
    rows = list(csv.reader(io.StringIO(text)))
    safe = [[c if _number(c) else cell(c) for c in row] for row in rows]
    if safe == rows:                        # its frozen bytes, as they are
        return text
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(safe)
    return buf.getvalue()


def _number(text: str) -> bool:
    """Read back, -0.05 is text again: it was written as a number, and a spreadsheet reads it as one."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def tib(n: int | None) -> str:
    return "–" if n is None else f"{n / TIB:,.3f} TiB"


def gib(n: int | None) -> str:
    return "–" if n is None else f"{n / GIB:,.1f} GiB"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:+.1f}%"


def share(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _svg(spec: dict) -> str:
    import vl_convert
    svg = vl_convert.vegalite_to_svg(spec)
    return svg[svg.index("<svg"):]          # no XML prolog inside HTML


def charts(fig: dict) -> dict[str, str]:
    """The charts as inline SVG: daily GiB by registry, cumulative TiB against the budget (and
    the projection with its band for a month in progress), the top images."""
    import altair as alt

    def inline(rows):          # values in the spec: no pandas to import for three small charts
        return alt.Data(values=rows)
    daily = inline([{"day": d["day"], "registry": reg, "GiB": b / GIB}
                          for d in fig["daily"] for reg, b in d["registries"].items()]
                         or [{"day": fig["month"] + "-01", "registry": "(none)", "GiB": 0.0}])
    out = {"daily": alt.Chart(daily).mark_bar().encode(
        x=alt.X("day:O", title="day"), y=alt.Y("sum(GiB):Q", title="GiB a day"),
        color=alt.Color("registry:N", title="registry"), order=alt.Order("registry:N"),
    ).properties(width=620, height=220, title="Egress a day, by registry")}
    run, cum = 0, []
    for d in fig["daily"]:
        run += d["bytes"]
        cum.append({"day": d["day"], "TiB": run / TIB, "what": "month to date"})
    layers = [alt.Chart(inline(cum or [{"day": fig["month"] + "-01", "TiB": 0.0, "what": "month to date"}]))
              .mark_line(point=True).encode(x=alt.X("day:T", title="day"), y=alt.Y("TiB:Q", title="TiB"),
                                            color=alt.Color("what:N", title=""))]
    if fig["budget_bytes"]:
        layers.append(alt.Chart(inline([{"budget": fig["budget_bytes"] / TIB}]))
                      .mark_rule(color="#c0392b", strokeDash=[6, 3]).encode(y="budget:Q"))
    p = fig.get("projection")
    if fig["partial"] and p and cum:
        last = fig["month"] + f"-{fig['days_in_month']:02d}"
        band = inline([{"day": cum[-1]["day"], "low": cum[-1]["TiB"], "high": cum[-1]["TiB"],
                              "TiB": cum[-1]["TiB"], "what": "projection"},
                             {"day": last, "low": p["low"] / TIB, "high": p["high"] / TIB,
                              "TiB": fig["projected_bytes"] / TIB, "what": "projection"}])
        layers.append(alt.Chart(band).mark_area(opacity=0.2, color="#7f8c8d").encode(x="day:T", y="low:Q", y2="high:Q"))
        layers.append(alt.Chart(band).mark_line(strokeDash=[4, 4]).encode(x="day:T", y="TiB:Q", color="what:N"))
    out["cumulative"] = alt.layer(*layers).properties(width=620, height=220, title="Month to date against the budget")
    images = inline([{"image": r["key"], "GiB": r["bytes"] / GIB} for r in fig["breakdowns"]["image"][:10]]
                          or [{"image": "(none)", "GiB": 0.0}])
    out["images"] = alt.Chart(images).mark_bar().encode(
        x=alt.X("GiB:Q"), y=alt.Y("image:N", sort="-x", title=None)).properties(width=520, height=200,
                                                                             title="Top images by GiB")
    return {k: _svg(c.to_dict()) for k, c in out.items()}


CSS = """
body { font-family: "DejaVu Sans", sans-serif; font-size: 10pt; color: #222; margin: 1.5em; }
h1 { font-size: 16pt; margin-bottom: 0.2em; } h2 { font-size: 12pt; margin-top: 1.4em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.4em 0; } td, th { padding: 2px 8px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 9pt; } .partial { color: #b9770e; font-weight: bold; }
.up { color: #c0392b; } .down { color: #1e8449; } svg { max-width: 100%; height: auto; }
@page { size: A4; margin: 1.2cm; }
"""


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"n\">{html.escape(str(c))}</td>" if i in numeric
                                    else f"<td>{html.escape(str(c))}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _breakdown_table(rows: list[dict]) -> str:
    return _table(["", "GiB", "share", "requests", "addresses"],
                  [[r["label"] or r["key"], gib(r["bytes"]), share(r["share"]), f"{r['requests']:,}",
                    f"{r['addresses']:,}"] for r in rows], {1, 2, 3, 4})


def to_html(fig: dict) -> str:
    c = charts(fig)
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>pullwarden — egress report {e(fig['month'])}</title><style>{CSS}</style></head><body>",
             f"<h1>Egress report {e(fig['month'])}</h1>",
             f"<p class=\"note\">Months and days in {e(fig['timezone'])} ({e(fig['start'])} to {e(fig['end'])} UTC). "
             f"TiB = 2<sup>40</sup> bytes, GiB = 2<sup>30</sup> bytes. Data to {e(fig['as_of'])} UTC.</p>"]
    if fig["partial"]:
        parts.append("<p class=\"partial\">Partial: the month is in progress; the figures run to the newest data "
                     "and the month's end is a projection.</p>")
    used, budget = fig["total_bytes"], fig["budget_bytes"]
    summary = [["egress", tib(used)], ["budget", tib(budget)], ["share of the budget", share(fig["budget_share"])],
               ["requests", f"{fig['requests']:,}"], ["client addresses", f"{fig['addresses']:,}"],
               ["guard level", fig["guard"]["level"]]]
    if fig.get("object_bytes"):         # a redirect-mode mirror: most bytes come from the store's log
        summary += [["from object-storage logs", f"{tib(fig['object_bytes'])} ({share(fig['object_share'])})"],
                    ["of those, not joined to a request", tib(fig["unjoined_bytes"])],
                    # how sure the per-client figures are: S3 links carry no referer
                    ["of those, joined by blob and time alone (estimate)", tib(fig.get("timed_bytes", 0))]]
    if fig["partial"] and fig["projection"]:
        p = fig["projection"]
        summary += [["projected at the month's end", f"{tib(fig['projected_bytes'])} ({p['headline']})"],
                    ["band", f"{tib(p['low'])} to {tib(p['high'])}"], ["linear", tib(p["linear"])],
                    ["day-of-week", tib(p["weekday"])],
                    ["days until the budget runs out", "–" if fig["days_until_exhausted"] is None
                     else f"{fig['days_until_exhausted']:.1f}"],
                    ["a day still allowed", gib(fig["allowed_bytes_per_day"])]]
    pm, sp = fig["previous_month"], fig["same_point_last_month"]
    summary += [[f"month before ({pm['month']})", f"{tib(pm['total_bytes'])} ({pct(pm['change_share'])}, {pm['trend']})"],
                ["same point last month", f"{tib(sp['bytes'])} ({pct(sp['change_share'])}, {sp['trend']})"]]
    if fig["cost"]:
        summary.append(["cost", f"{fig['cost']['amount']:,.2f} {fig['cost']['currency']}"])
    if fig.get("projected_cost"):
        summary.append(["projected cost", f"{fig['projected_cost']['amount']:,.2f} {fig['projected_cost']['currency']}"])
    parts += ["<h2>Egress against the budget</h2>", _table(["", ""], summary, {1}), c["cumulative"]]
    if fig["partial"] and fig["projection"]:
        parts.append(f"<p class=\"note\">Projection method: {e(fig['projection']['method'])}</p>")
    parts += ["<h2>Daily</h2>", c["daily"],
              _table(["day", "GiB", "requests", "addresses"],
                     [[d["day"], gib(d["bytes"]), f"{d['requests']:,}", f"{d['addresses']:,}"] for d in fig["daily"]],
                     {1, 2, 3})]
    parts.append("<h2>Top movers</h2><p class=\"note\">Against the same stretch of the month before; a change "
                 "within ±5% is flat.</p>")
    for name, rows in fig["movers"].items():
        parts += [f"<h3>{e(name)}</h3>", _table(["", "GiB", "before", "change", "trend"],
                  [[r["key"], gib(r["bytes"]), gib(r["before"]), pct(r["change_share"]), r["trend"]] for r in rows],
                  {1, 2, 3})]
    titles = {"registry": "Registry", "tier": "Tier", "asn": "AS number", "country": "Country",
              "family": "Client family", "image": "Image"}
    parts.append("<h2>Breakdowns</h2>")
    for name in ("registry", "tier", "asn", "country", "family", "image"):
        parts += [f"<h3>{titles[name]}</h3>", _breakdown_table(fig["breakdowns"][name])]
        if name == "image":
            parts.append(c["images"])
    # a redirect-mode mirror: how much of each address's GiB was matched to it by blob and time
    # alone (S3 links carry no referer), an estimate beside the exact rest
    timed = bool(fig.get("object_bytes"))
    parts += ["<h2>Top 20 consumers</h2>",
              _table(["address", "AS", "country", "GiB", "share", "requests", "images"]
                     + (["of which by time alone (GiB)"] if timed else []),
                     [[r["address"], "" if r["asn"] is None else f"AS{r['asn']} {r['as_org'] or ''}", countries.label(r["country"]) or "",
                       gib(r["bytes"]), share(r["share"]), f"{r['requests']:,}", r["images"]]
                      + ([gib(r.get("timed_bytes", 0))] if timed else [])
                      for r in fig["top_consumers"]], {3, 4, 5, 6, 7})]
    if fig["cost"]:
        parts += ["<h2>Cost</h2>", _table(["from TiB", "to TiB", "TiB", "price per TiB", "amount"],
                  [[s["from_tib"], "–" if s["to_tib"] is None else s["to_tib"], f"{s['tib']:.3f}", s["price_per_tib"],
                    f"{s['amount']:,.2f}"] for s in fig["cost"]["steps"]], {0, 1, 2, 3, 4})]
    d = fig["decisions"]
    parts += ["<h2>Decisions and their impact</h2>",
              f"<p class=\"note\">{d['decisions']} decisions were in force during the month; the {d['shown']} whose "
              f"entity moved the most bytes before them are shown: bytes a day in the {d['days']} days before each "
              "decision and after it (to its end or the data's).</p>",
              _table(["decision", "entity", "rule", "from", "to", "GiB/day before", "GiB/day after", "change"],
                     [[f"#{r['id']} {r['effect']}{' ' + r['tier'] if r['tier'] else ''}", f"{r['scope']} {r['value']}",
                       r["rule"] or r["origin"], r["created_at"][:16], r["until"][:16], gib(r["bytes_per_day_before"]),
                       gib(r["bytes_per_day_after"]), pct(r["change_share"])] for r in d["rows"]], {5, 6, 7})]
    parts.append(f"<p class=\"note\">Inputs sha256 {e(fig.get('inputs_sha256', ''))}</p></body></html>\n")
    return "".join(parts)


def to_pdf(html_text: str) -> bytes:
    import weasyprint
    return weasyprint.HTML(string=html_text).write_pdf()

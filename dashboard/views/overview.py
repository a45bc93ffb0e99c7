"""Overview: today and month to date against the budget, the projection and the guard's action,
the biggest networks and countries, what is in force (one line per entity), how fresh the data is,
and the daily series."""
import pandas as pd
import streamlit as st

from core.decided import by_entity
from dashboard import charts, ui

st.title("Overview")
o = ui.get("/v1/stats/overview")
b = ui.get("/v1/stats/budget")
if o is None:
    st.stop()
if not o.get("latest_event"):
    st.info(ui.NO_TRAFFIC)

c = st.columns(4)
c[0].metric("Today (TiB)", ui.tib(o["today"]["bytes"]), help=f"{o['today']['day']} (UTC); {ui.UNITS}")
if b:
    budget = b.get("budget_bytes")
    used = b.get("used_bytes", b.get("bytes"))
    c[1].metric("Month to date (TiB)", ui.tib(used),
                help=f"{b.get('month')} ({b.get('timezone', 'UTC')}), day {b.get('days_elapsed')} of {b.get('days_in_month')}")
    c[2].metric("Budget (TiB)", ui.tib(budget) if budget else "not set",
                delta=f"{used / budget * 100:.0f}% used" if budget else None, delta_color="off",
                help=None if budget else "pullwarden budget set --monthly-tib N")
    p = b.get("projection") or {}
    c[3].metric("Projected month end (TiB)", ui.tib(b.get("projected_bytes")),
                delta=f"{(b['projected_bytes'] - budget) / budget * 100:+.0f}% vs budget" if budget and b.get("projected_bytes") is not None else None,
                delta_color="inverse")
    if p:
        st.caption(f"Projection: {p.get('method', '')} — linear {ui.tib(p.get('linear'))} TiB, by day of week "
                   f"{ui.tib(p.get('weekday'))} TiB, band {ui.tib(p.get('low'))}–{ui.tib(p.get('high'))} TiB.")
    c = st.columns(4)
    left = b.get("days_until_exhausted")
    c[0].metric("Days until the budget runs out", "—" if left is None else f"{left:.1f}",
                help="at the projected pace; — when it lasts the month or no budget is set")
    c[1].metric("TiB a day still allowed", "—" if b.get("allowed_bytes_per_day") is None else ui.tib(b["allowed_bytes_per_day"]),
                help="what is left of the budget over the days left in the month")
    guard = b.get("guard") or {}
    if guard.get("level") or guard.get("state"):
        c[2].metric("Budget guard", str(guard.get("level") or guard.get("state")),
                    help="levels: 50%, 80%, projected over the budget, 100%")
    if budget and b.get("projected_bytes", 0) > budget:
        over = "is over" if used >= budget else "is projected over"
        st.warning(f"This month {over} its budget of {ui.tib(budget)} TiB: {ui.tib(used)} TiB used, "
                   f"{ui.tib(b['projected_bytes'])} TiB projected ({b['projected_bytes'] / budget:.0%}). Budget guard: "
                   f"{guard.get('action_text') or 'nothing to do'}.")
else:
    c = st.columns(4)
f = o.get("in_force") or {}
c[3].metric("Bans / throttles in force", f"{f.get('bans', 0)} / {f.get('throttles', 0)}",
            help=f"boosts {f.get('boosts', 0)}, held for review {f.get('held', 0)}")

lag = o.get("ingest_lag_seconds")
fresh = "no events yet" if lag is None else f"{lag / 60:.0f} min" if lag < 7200 else f"{lag / 3600:.1f} h"
st.caption(f"Data freshness: newest event {ui.when(o.get('latest_event')) or '—'}, ingest lag {fresh} "
           f"(at {ui.when(o.get('now'))}).")
if o.get("object_bytes"):       # a redirect-mode mirror: the store's log holds most of the bytes
    # how sure each byte's client is: a store that signs links without a referer (AWS S3) is
    # joined by blob and time alone; bytes rolled up before pullwarden kept the split have neither
    before = o["object_bytes"] - o["exact_bytes"] - o["timed_bytes"] - o["unjoined_bytes"]
    st.caption(f"Last 30 days: {ui.size(o['bytes'])} served, {ui.size(o['object_bytes'])} of it from object-storage "
               f"logs ({o['object_bytes'] / o['bytes']:.1%}): {ui.size(o['exact_bytes'])} joined to the client "
               f"exactly (the link's referer or the client's own 307), {ui.size(o['timed_bytes'])} by blob and time "
               f"alone (an estimate), {ui.size(o['unjoined_bytes'])} not joined to a request (counted for the "
               "address that downloaded)"
               + (f", {ui.size(before)} rolled up before the split was kept" if before > 0 else "") + ".")

c = st.columns(2)
for col, by, title in ((c[0], "asn", "Networks (AS), last 7 days"), (c[1], "country", "Countries, last 7 days")):
    t = ui.get("/v1/stats/top", quiet=True, by=by, limit=6) or {}
    col.subheader(title)
    if t.get("rows"):
        col.dataframe(pd.DataFrame([{title.split(",")[0]: r.get("label") or r["entity"], "GiB": ui.gib(r["bytes"]),
                                     "share %": round((r.get("share") or 0) * 100, 1), "addresses": r.get("addresses")}
                                    for r in t["rows"]]), hide_index=True, width="stretch", key=f"overview-{by}")
    elif t.get("total_bytes"):
        col.caption("No AS or country known for these addresses: set `asn_db` / `country_db` (GeoLite2, DB-IP Lite "
                    "or IPinfo Lite).")

active = ui.get("/v1/stats/decisions", quiet=True, active="true", limit=5000)
if active:
    decided = by_entity(active)
    st.subheader(f"In force: {len(decided)} entities, {len(active)} decisions")
    st.dataframe(pd.DataFrame([{
        "entity": f"{g['scope']} {g['value']}", "effect": f"{g['effect']}:{g['tier']}" if g["tier"] else g["effect"],
        "rules": ", ".join(g["rules"]), "until": ui.when(g["until"]), "why": g["reason"]} for g in decided]),
        hide_index=True, width="stretch", key="overview-in-force")

if b and b.get("daily") and any(d["bytes"] for d in b["daily"]):
    st.subheader("This month against the budget")
    st.altair_chart(charts.burn_up(b["daily"], b.get("budget_bytes"), b.get("projected_bytes"), p.get("low"),
                                   p.get("high"), b.get("end") or b["daily"][-1]["day"]).properties(height=220),
                    width="stretch")
if o.get("daily"):
    st.subheader("Daily TiB by registry (last 30 days)")
    st.altair_chart(charts.stacked_daily(o["daily"]), width="stretch")
if o.get("daily_totals"):
    c = st.columns(2)
    c[0].subheader("Requests a day")
    c[0].altair_chart(charts.lines(o["daily_totals"], "day", {"requests": "requests"}, "day"), width="stretch")
    c[1].subheader("Unique addresses a day")
    c[1].altair_chart(charts.lines(o["daily_totals"], "day", {"addresses": "unique addresses"}, "day"), width="stretch")

"""Overview: today and month to date against the budget, the projection, the daily series,
what is in force and how fresh the data is."""
import streamlit as st

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
        c[2].metric("Budget guard", str(guard.get("level") or guard.get("state")))
else:
    c = st.columns(4)
f = o.get("in_force") or {}
c[3].metric("Bans / throttles in force", f"{f.get('bans', 0)} / {f.get('throttles', 0)}",
            help=f"boosts {f.get('boosts', 0)}, held for review {f.get('held', 0)}")

lag = o.get("ingest_lag_seconds")
fresh = "no events yet" if lag is None else f"{lag / 60:.0f} min" if lag < 7200 else f"{lag / 3600:.1f} h"
st.caption(f"Data freshness: newest event {o.get('latest_event') or '—'}, ingest lag {fresh} (at {o.get('now')} UTC).")
if o.get("object_bytes"):       # a redirect-mode mirror: the store's log holds most of the bytes
    st.caption(f"Last 30 days: {o['bytes']:,} bytes served, {o['object_bytes']:,} of them from object-storage logs "
               f"({o['object_bytes'] / o['bytes']:.1%}); {o['unjoined_bytes']:,} could not be joined to a request "
               "and count for the address that downloaded.")

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

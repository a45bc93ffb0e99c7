"""Budget & reports: the month against the budget (a burn-up with the projection and its band),
a what-if for the anonymous tier, and the monthly reports."""
import streamlit as st

from dashboard import charts, ui
from dashboard.client import ApiError


def projected_after(col, label: str, w: dict) -> None:
    """A what-if's month-end projection, with how far it moved from the projection now."""
    after, now = w.get("projected_bytes_after"), w.get("projected_bytes")
    col.metric(label, ui.tib(after), delta=f"{ui.tib((after or 0) - (now or 0))} TiB", delta_color="inverse")


st.title("Budget & reports")
b = ui.get("/v1/stats/budget")
if b is None:
    st.stop()
budget = b.get("budget_bytes")
p = b.get("projection") or {}
c = st.columns(4)
c[0].metric("Month to date (TiB)", ui.tib(b.get("used_bytes", b.get("bytes"))),
            help=f"{b.get('month')} in {b.get('timezone', 'UTC')}, as of {ui.when(b.get('as_of'))}; {ui.UNITS}")
c[1].metric("Budget (TiB)", ui.tib(budget) if budget else "not set")
c[2].metric("Projected month end (TiB)", ui.tib(b.get("projected_bytes")), help=f"headline: {p.get('headline', '')}")
c[3].metric("Band (TiB)", f"{ui.tib(p.get('low'))}–{ui.tib(p.get('high'))}" if p else "—")
c = st.columns(4)
left = b.get("days_until_exhausted")
c[0].metric("Days until the budget runs out", "—" if left is None else f"{left:.1f}",
            help="at the projected pace; — when no budget is set")
c[1].metric("TiB a day still allowed", "—" if b.get("allowed_bytes_per_day") is None else ui.tib(b["allowed_bytes_per_day"]))
guard = b.get("guard") or {}
c[2].metric("Budget guard", guard.get("level", "—"), help="levels: 50%, 80%, projected over the budget, 100%")
c[3].metric("Used / projected share", f"{ui.pct(guard.get('used_share'))} / {ui.pct(guard.get('projected_share'))}")
if not budget:
    st.info("No budget set: `pullwarden budget set 50` (TiB a month), or PUT /v1/admin/budget.")
if b.get("daily") and any(d["bytes"] for d in b["daily"]):
    # the projection is for the month's end: the first instant of the next month
    st.altair_chart(charts.burn_up(b["daily"], budget, b.get("projected_bytes"), p.get("low"), p.get("high"),
                                   b.get("end") or b["daily"][-1]["day"]), width="stretch")
    st.caption("Projection (dashed, with its band): " + (p.get("method") or ""))
else:
    st.info("Nothing served this month yet. " + ui.NO_TRAFFIC)
if guard.get("actions") or guard.get("tightened") or guard.get("crossed"):
    st.markdown(f"**What the guard did or would do:** {guard.get('action_text') or 'nothing to do'}")
    with st.expander("The guard's memory this month"):
        st.json({k: guard.get(k) for k in ("crossed", "notified", "actions", "tightened")}, expanded=True)
action = guard.get("action")
if action and action.get("tier") and action["tier"] != action.get("previous"):
    # the tighter tier the guard moves anonymous traffic to: what it saves, without asking for a click
    w = ui.get("/v1/stats/budget/whatif", tier=action["tier"])
    if w:
        st.subheader(f"If anonymous traffic were in tier {action['tier']} (the guard's action)")
        c = st.columns(4)
        c[0].metric("Saved by that tier this month (TiB)", ui.tib(w.get("saved_bytes")))
        projected_after(c[1], "Projected month end with it (TiB)", w)
        c[2].metric("Anonymous traffic this month (TiB)", ui.tib(w.get("anonymous_bytes")))
        c[3].metric("Guard after", w.get("guard_after", "—"))

st.subheader("What if the anonymous tier were changed?")
st.caption("Replays this month's anonymous traffic through the changed limits: what they would have refused is "
           "taken off, and the month is projected again.")
anon = ui.tiers().get("anonymous") or {}
with st.form("whatif"):
    c = st.columns(3)
    rpm = c[0].number_input("Requests a minute", 1, 10**6, anon.get("requests_per_minute") or 300, key="whatif-rpm")
    burst = c[1].number_input("Burst", 1, 10**6, anon.get("burst") or 600, key="whatif-burst")
    window = c[2].number_input("GiB per 2 h window", 1, 10**6, int((anon.get("window_bytes") or 20 * ui.GIB) / ui.GIB),
                               key="whatif-window")
    asked = st.form_submit_button("Project", key="whatif-submit")
if asked:
    w = ui.get("/v1/stats/budget/whatif", rpm=int(rpm), burst=int(burst), window_gib=int(window))
    if w:
        c = st.columns(4)
        c[0].metric("Projected month end now (TiB)", ui.tib(w.get("projected_bytes")))
        projected_after(c[1], "With the changed tier (TiB)", w)
        c[2].metric("Saved this month so far (TiB)", ui.tib(w.get("saved_bytes")))
        c[3].metric("Guard after", w.get("guard_after", "—"))
        with st.expander("How this is computed"):
            st.text(w.get("method", ""))

st.subheader("Monthly reports")
reports = ui.get("/v1/stats/reports")
if not reports:
    if reports is not None:
        st.info("No month with traffic yet: reports appear here once there is a month to report on; "
                "`pullwarden report monthly --month YYYY-MM` writes them to files.")
    st.stop()
labels = {r["month"]: r["month"] + (" (frozen)" if r.get("frozen") else " (in progress)" if r is reports[0] else "")
          for r in reports}
c = st.columns([2, 1, 1, 1, 1])
month = c[0].selectbox("Month", list(labels), format_func=labels.get, key="reports-month")
for col, ext in zip(c[1:], ("html", "pdf", "csv", "json")):
    if col.button(f"Prepare {ext.upper()}", key=f"reports-{ext}"):
        try:
            data = ui.client().request("GET", f"/v1/stats/reports/{month}.{ext}")
        except ApiError as e:
            ui.error(e)
        else:
            if not isinstance(data, bytes):
                import json
                data = json.dumps(data, indent=2).encode()
            col.download_button(f"Save {ext.upper()}", data, file_name=f"pullwarden-{month}.{ext}",
                                key=f"reports-save-{ext}")
            if ext == "json":
                st.session_state["reports-figures"] = json.loads(data)
r = st.session_state.get("reports-figures")
if r and r.get("month") == month:
    c = st.columns(4)
    c[0].metric(f"{month}: total (TiB)", ui.tib(r.get("total_bytes")))
    c[1].metric("Budget (TiB)", ui.tib(r.get("budget_bytes")))
    c[2].metric("Projected (TiB)", ui.tib(r.get("projected_bytes")))
    c[3].metric("Addresses", f"{r.get('addresses') or 0:,}")

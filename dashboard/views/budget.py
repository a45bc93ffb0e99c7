"""Budget & reports: month to date against the budget, the monthly reports, and a what-if: the
projected month-end TiB if the anonymous tier were changed."""
import streamlit as st

from dashboard import ui

st.title("Budget & reports")
b = ui.get("/v1/stats/budget")
if b:
    budget = b.get("budget_bytes")
    c = st.columns(4)
    c[0].metric("Month to date (TiB)", ui.tib(b.get("used_bytes", b.get("bytes"))), help=f"{b.get('month')}; {ui.UNITS}")
    c[1].metric("Budget (TiB)", ui.tib(budget) if budget else "not set")
    c[2].metric("Projected month end (TiB)", ui.tib(b.get("projected_bytes")))
    p = b.get("projection") or {}
    c[3].metric("Band (TiB)", f"{ui.tib(p.get('low'))}–{ui.tib(p.get('high'))}" if p else "—",
                help=p.get("method"))
    if not budget:
        st.info("No budget set: `pullwarden budget set --monthly-tib 50` (or PUT /v1/admin/budget).")
    guard = b.get("guard")
    if guard:
        st.markdown("**Budget guard**")
        st.json(guard, expanded=False)

st.subheader("What if the anonymous tier were changed?")
st.caption("Replays this month's traffic through the changed tier: the bytes it would have refused are taken "
           "off, and the month is projected again.")
with st.form("whatif"):
    c = st.columns(3)
    rpm = c[0].number_input("Requests a minute", 1, 100000, 300, key="whatif-rpm")
    burst = c[1].number_input("Burst", 1, 100000, 600, key="whatif-burst")
    window = c[2].number_input("GiB per window", 1, 100000, 20, key="whatif-window")
    asked = st.form_submit_button("Project", key="whatif-submit")
if asked:
    w = ui.get("/v1/stats/budget/whatif", rpm=int(rpm), burst=int(burst), window_gib=int(window))
    if w:
        c = st.columns(3)
        c[0].metric("Projected month end now (TiB)", ui.tib(w.get("baseline_projected_bytes", b and b.get("projected_bytes"))))
        c[1].metric("With the changed tier (TiB)", ui.tib(w.get("projected_bytes")))
        if w.get("refused_bytes") is not None:
            c[2].metric("Refused by the tier (TiB)", ui.tib(w["refused_bytes"]))
        with st.expander("Details"):
            st.json(w)

st.subheader("Monthly reports")
reports = ui.get("/v1/stats/reports")
if reports:
    for r in reports if isinstance(reports, list) else reports.get("reports", []):
        month = r.get("month") if isinstance(r, dict) else str(r)
        c = st.columns([2, 1, 1, 1, 1])
        c[0].markdown(f"**{month}**" + (" (partial)" if isinstance(r, dict) and r.get("partial") else ""))
        for col, ext in zip(c[1:], ("html", "pdf", "csv", "json")):
            if col.button(ext.upper(), key=f"report-{month}-{ext}"):
                try:
                    data = ui.client().request("GET", f"/v1/stats/reports/{month}.{ext}")
                except Exception as e:          # ApiError: shown with what to do
                    st.error(str(e))
                else:
                    import json
                    body = json.dumps(data).encode() if not isinstance(data, bytes) else data
                    col.download_button(f"save {ext}", body, file_name=f"pullwarden-{month}.{ext}",
                                        key=f"save-{month}-{ext}")
elif reports is not None:
    st.info("No monthly report yet: `pullwarden report monthly --month YYYY-MM`, or wait for the 1st "
            "(serve writes last month's).")

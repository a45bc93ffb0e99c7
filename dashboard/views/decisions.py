"""Decisions & audit: every decision with filters, and the audit log of who changed what and why."""
import pandas as pd
import streamlit as st

from core.decided import by_entity
from dashboard import charts, ui

st.title("Decisions & audit")
c = st.columns(5)
state = c[0].selectbox("State", ["in force", "held", "all"], key="dec-state")
rule = c[1].text_input("Rule", key="dec-rule")
scope = c[2].selectbox("Scope", ["", "ip", "range", "asn", "user"], key="dec-scope")
effect = c[3].selectbox("Effect", ["", "ban", "throttle", "boost"], key="dec-effect")
origin = c[4].selectbox("Origin", ["", "rule", "manual"], key="dec-origin")
rows = ui.get("/v1/stats/decisions", active="true" if state == "in force" else None,
              held="true" if state == "held" else None, rule=rule, scope=scope, effect=effect, origin=origin,
              limit=5000)
if rows is None:
    st.stop()
# a server that does not filter yet: filter here, so the page says the same either way
for field, want in (("rule", rule), ("scope", scope), ("effect", effect), ("origin", origin)):
    if want:
        rows = [r for r in rows if str(r.get(field)) == want]
if rows:
    df = pd.DataFrame(rows)
    now = (ui.get("/v1/stats/overview", quiet=True) or {}).get("now")

    def state_of(r: dict) -> str:
        if r.get("held"):
            return "held"
        if r.get("revoked_at"):
            return "revoked"
        if r.get("simulated"):
            return "simulated"
        return "in force" if not now or ui.instant(r["until"]) > ui.instant(now) else "ended"
    decided = by_entity(rows, state_of)
    c = st.columns(4)
    c[0].metric("Decisions", len(df))
    c[1].metric("Entities", len(decided), help="one row each below, with every rule that decided")
    c[2].metric("Bans", int((df["effect"] == "ban").sum()))
    c[3].metric("Tier assignments", int((df["effect"] != "ban").sum()))
    st.altair_chart(charts.bars(df.groupby("rule", dropna=False).size().reset_index(name="n")
                                .fillna({"rule": "(admin)"}).sort_values("n", ascending=False).to_dict("records"),
                                "rule", "n", "decisions"), width="stretch")
    # one row per entity: two rules on one address are two decisions (the API keeps both), one line here
    st.dataframe(pd.DataFrame([{
        "entity": f"{g['scope']} {g['value']}", "effect": f"{g['effect']}:{g['tier']}" if g["tier"] else g["effect"],
        "state": g["state"], "rules": ", ".join(g["rules"]), "until": ui.when(g["until"]),
        "reason": " · ".join(g["reasons"]), "decisions": ", ".join(f"#{i}" for i in g["ids"])} for g in decided]),
        hide_index=True, width="stretch", key="decided-entities")
    with st.expander(f"Each decision ({len(df)}), as the API keeps them"):
        st.dataframe(pd.DataFrame(ui.local_times(rows)).drop(columns=["seq"], errors="ignore"), hide_index=True,
                     width="stretch")
else:
    st.info("No decisions match. Rules make them at each detection pass; admins with `pullwarden ban` or "
            "the actions on **Entity** and **Review**.")

st.subheader("Audit log")
if ui.is_admin():
    audit = ui.get("/v1/admin/audit", limit=500)
    if audit:
        st.dataframe(pd.DataFrame(ui.local_times(audit)), hide_index=True, width="stretch")
    elif audit is not None:
        st.caption("No changes yet.")
else:
    st.caption("The audit log is shown to admin keys.")

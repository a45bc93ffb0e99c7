"""Rules: each rule's hits over a range, and the bytes a backtest says its bans would have saved."""
import pandas as pd
import streamlit as st

from dashboard import charts, ui

st.title("Rules")
start, end = ui.date_range("rules-dates", 7, ui.latest_day())
rows = ui.get("/v1/stats/rules", start=start, end=end)
if rows is None:
    st.stop()
if not rows:
    st.info("No rules loaded. The shipped packs are in rules/packs/; a site folder is `rules_dir`.")
    st.stop()
df = pd.DataFrame(rows)
c = st.columns(4)
c[0].metric("Rules", len(df), help=f"{int(df['simulated'].sum())} simulated (they find, but decide nothing)")
c[1].metric("Findings", int(df["findings"].sum()))
c[2].metric("Decisions", int(df["decisions"].sum()))
c[3].metric("In force now", int(df["active"].sum()), help="decisions of these rules in force now")
if not df["findings"].any():
    st.info("No rule found anything in this range. " + ui.NO_TRAFFIC)
else:
    st.altair_chart(charts.bars(df[df["findings"] > 0].to_dict("records"), "rule", "findings", "findings"),
                    width="stretch")
cols = ["rule", "pack", "entity", "window", "action", "simulated", "findings", "entities", "decisions", "active",
        "description"]
st.dataframe(df[[c for c in cols if c in df]], hide_index=True, width="stretch")

st.subheader("Backtest: bytes saved")
st.caption("Replays every rule hour by hour over the last 24 hours of traffic and counts what its bans would have "
           "kept from being served (live decisions are not touched; a few seconds on a busy mirror).")
if st.button("Run the backtest", key="rules-backtest"):
    st.session_state["rules-backtest-result"] = ui.get("/v1/stats/backtest")
bt = st.session_state.get("rules-backtest-result")
if bt:
    saved = pd.DataFrame(bt["rules"])
    st.metric("TiB saved in all", ui.tib(int(saved["bytes_saved"].sum())),
              help=f"{bt['from']} to {bt['to']}; {ui.UNITS}")
    hits = saved[saved["bytes_saved"] > 0]
    if len(hits):
        st.altair_chart(charts.bars(hits.to_dict("records"), "rule", "bytes_saved", "GiB saved (2^30 bytes)", ui.GIB),
                        width="stretch")
    saved["GiB saved"] = (saved["bytes_saved"] / ui.GIB).round(2)
    saved["GiB flagged"] = (saved["bytes"] / ui.GIB).round(2)
    st.dataframe(saved[["rule", "pack", "action", "entities", "decisions", "GiB flagged", "GiB saved"]],
                 hide_index=True, width="stretch")

"""Review: what the rules found and what the circuit breaker held; approve, drop, ban, throttle
to a tier, allowlist, revoke."""
import pandas as pd
import streamlit as st

from dashboard import actions, ui

st.title("Review")
admin = ui.is_admin()

st.subheader("Held by the circuit breaker")
held = ui.get("/v1/stats/decisions", held="true")
if held:
    st.dataframe(pd.DataFrame(ui.local_times(held))[["id", "scope", "value", "effect", "tier", "rule", "reason", "held",
                                                      "until"]],
                 hide_index=True, width="stretch")
    if admin:
        with st.form("review-held"):
            labels = {d["id"]: f"#{d['id']} {d['effect']} {d['scope']} {d['value']} [{d['rule']}]" for d in held}
            ids = st.multiselect("Decisions", list(labels), default=list(labels), format_func=labels.get,
                                 key="review-held-ids")
            verb = st.radio("Do", ["approve (put in force)", "drop (revoke)"], horizontal=True, key="review-held-verb")
            path = "/v1/admin/decisions/approve" if verb.startswith("approve") else "/v1/admin/decisions/drop"
            ui.act("Apply to the held decisions", "POST", path, {"ids": ids}, "review-held")
elif held is not None:
    st.caption("Nothing held: every rule's new bans were within the breaker's limit.")

st.subheader("Findings")
found = ui.get("/v1/stats/findings", limit=1000)
if found is None:
    st.stop()
if not found:
    st.info("No findings yet: serve judges new traffic within seconds of ingesting it (a fresh pass every "
            "`detect_fresh_interval`) and everything every `detect_interval`. "
            + ui.NO_TRAFFIC)
    st.stop()
show_simulated = st.toggle("Show simulated rules' findings", value=False, key="review-simulated")
rows = [f for f in found if show_simulated or not f.get("simulated")]
latest = max(str(f["now"]) for f in found)
st.caption(f"{len(rows)} finding(s) shown of {len(found)}; newest pass at {ui.when(latest)}.")
st.dataframe(pd.DataFrame(ui.local_times(rows or found)), hide_index=True, width="stretch")

entities = sorted({f"{f['entity_kind']} {f['entity']}" for f in rows if f["entity_kind"] in actions.SCOPE})
if not entities:
    st.stop()
c = st.columns([3, 1])
picked = c[0].selectbox("Act on", entities, key="review-entity").split(" ", 1)
if c[1].button("Open entity", key="review-open"):
    st.session_state["entity"] = {"kind": picked[0], "value": picked[1]}
    st.switch_page("views/entity.py")
if admin:
    live = ui.get("/v1/stats/decisions", quiet=True, active="true", value=picked[1]) or []
    live = [d for d in live if str(d.get("value")) == picked[1]]
    actions.entity_actions(picked[0], picked[1], live, "review")
else:
    ui.viewer_note()

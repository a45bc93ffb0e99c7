"""Images: the allowed, unlimited and blocked lists with an editor, a "does this image match, and
by which pattern?" box, and the demand for refused images."""
import pandas as pd
import streamlit as st

from dashboard import charts, ui

LISTS = {"allowed": "Allowed (when the list is not empty, only these are served)",
         "unlimited": "Unlimited (served without the tier's limits)", "blocked": "Blocked (refused)"}

st.title("Images")
lists = ui.get("/v1/stats/images")
if lists is None:
    st.stop()
c = st.columns(3)
for col, name in zip(c, LISTS):
    col.metric(name.capitalize(), len(lists.get(name) or []), help=LISTS[name])
for tab, name in zip(st.tabs([n.capitalize() for n in LISTS]), LISTS):
    with tab:
        st.caption(LISTS[name])
        if lists.get(name):
            st.dataframe(pd.DataFrame(ui.local_times(lists[name])), hide_index=True, width="stretch")
        else:
            st.caption("empty" + (": every image is allowed" if name == "allowed" else ""))

if ui.is_admin():
    with st.form("images-edit"):
        st.markdown("**Edit a list** (patterns like `docker.io/library/*`, one a line)")
        c = st.columns([1, 1, 3])
        name = c[0].selectbox("List", list(LISTS), key="images-list")
        verb = c[1].radio("Do", ["add", "remove"], key="images-verb")
        text = c[2].text_area("Patterns", key="images-patterns", height=80)
        patterns = [p.strip() for p in text.splitlines() if p.strip()]
        ui.act("Change the list", "POST" if verb == "add" else "DELETE", f"/v1/admin/images/{name}",
               {"patterns": patterns}, "images-edit")
else:
    ui.viewer_note()

st.subheader("Does this image match, and by which pattern?")
image = st.text_input("Image", placeholder="nginx:1.27 or ghcr.io/org/app", key="images-match")
if image.strip():
    m = ui.get("/v1/stats/images/match", image=image.strip())
    if m:
        verdict = m.get("verdict", "?")
        (st.success if verdict != "refused" else st.warning)(
            f"{ui.literal(m.get('image'))}: **{verdict}** — {ui.literal(m.get('why', ''))}")
        st.caption(" · ".join(f"{k}: {ui.literal(m.get(k) or '—')}" for k in ("allowed", "unlimited", "blocked")))

st.subheader("Demand for refused images")
start, end = ui.date_range("images-dates", 7, ui.latest_day())
demand = ui.get("/v1/stats/demand", start=start, end=end, limit=50)
if demand:
    st.caption("Images not served (blocked, or not on the allow list) that clients asked for most: "
               "what users would otherwise file issues for.")
    st.altair_chart(charts.bars(demand, "image", "addresses", "distinct addresses"), width="stretch")
    st.dataframe(pd.DataFrame(demand), hide_index=True, width="stretch")
elif demand is not None:
    st.info("No refused image was asked for in this range" +
            (" (nothing is refused: the allow list is empty and nothing is blocked)."
             if not lists.get("allowed") and not lists.get("blocked") else "."))

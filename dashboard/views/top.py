"""Top talkers by address, prefix, ASN, country, client family, image, user or user agent; a row
opens the entity."""
import pandas as pd
import streamlit as st

from dashboard import charts, ui

BY = {"address": "Address", "prefix": "/24 or /64", "asn": "ASN", "country": "Country", "family": "Client family",
      "image": "Image", "user": "User", "user_agent": "User agent"}
ENTITY = {"address": "address", "prefix": "prefix", "asn": "asn", "user": "user"}     # what Entity can open

st.title("Top talkers")
c = st.columns([2, 3, 1])
by = c[0].selectbox("By", list(BY), format_func=BY.get, key="top-by")
with c[1]:
    start, end = ui.date_range("top-dates", 7, ui.latest_day())
limit = c[2].number_input("Rows", 5, 1000, 50, key="top-limit")
t = ui.get("/v1/stats/top", by=by, start=start, end=end, limit=int(limit))
if t is None:
    st.stop()
rows = t.get("rows") or []
if not rows and t.get("total_bytes") and by in ("asn", "country"):
    st.info(f"No {BY[by]} is known for these addresses: set `asn_db` / `country_db` to MaxMind-format databases "
            "(GeoLite2, DB-IP Lite or IPinfo Lite); ingest looks addresses up from then on.")
    st.stop()
if not rows and t.get("total_bytes") and by == "user":
    st.info("No pulls with a user name in this range: every client is anonymous (users come from the log's "
            "$remote_user, set when the mirror asks for basic auth).")
    st.stop()
if not rows:
    st.info("Nobody in this range. " + ui.NO_TRAFFIC)
    st.stop()

st.caption(f"{ui.size(t.get('total_bytes'))} in all from {t['start']} to {t['end']} ({ui.UNITS}). "
           + ("GiB per address is the fair share: high for one heavy host, low for a NAT or a cluster. "
              if by in ("asn", "prefix", "country") else "")
           + ("Select a row to open it." if by in ENTITY else ""))
df = pd.DataFrame([{
    BY[by]: r.get("label") or r["entity"], "GiB": ui.gib(r["bytes"]), "share %": round((r.get("share") or 0) * 100, 2),
    "requests": r.get("requests"), "pulls": r.get("pulls"), "repeat ratio": r.get("repeat_ratio"),
    "addresses": r.get("addresses"), "GiB per address": ui.gib(r.get("bytes_per_address")),
} for r in rows])
picked = st.dataframe(df, hide_index=True, width="stretch", key="top-table",
                      on_select="rerun" if by in ENTITY else "ignore", selection_mode="single-row")


def open_entity(row: dict) -> None:
    st.session_state["entity"] = {"kind": ENTITY[by], "value": str(row["entity"])}
    st.switch_page("views/entity.py")


if by in ENTITY:
    chosen = getattr(getattr(picked, "selection", None), "rows", None) or []
    if chosen:
        open_entity(rows[chosen[0]])
    c = st.columns([3, 1])
    name = c[0].selectbox("Open", [r["entity"] for r in rows], key="top-open",
                          format_func=lambda e: next((r.get("label") or e for r in rows if r["entity"] == e), e))
    if c[1].button("Open entity", key="top-open-button"):
        open_entity(next(r for r in rows if r["entity"] == name))

st.altair_chart(charts.bars([{**r, "name": r.get("label") or r["entity"]} for r in rows], "name", "bytes",
                            "GiB (2^30 bytes)", ui.GIB), width="stretch")

"""Traffic: a time series with the filters operators ask log dashboards for, against the period
before it."""
from datetime import datetime

import streamlit as st

from dashboard import charts, ui

st.title("Traffic")
with st.expander("Filters", expanded=True):
    c = st.columns(4)
    with c[0]:
        start, end = ui.date_range("traffic-dates", 7, ui.latest_day())
    bucket = c[1].selectbox("Bucket", ["hour", "day"], key="traffic-bucket")
    registry = c[2].text_input("Registry", placeholder="docker.io", key="traffic-registry")
    image = c[3].text_input("Image", placeholder="library/nginx", key="traffic-image")
    c = st.columns(4)
    asn = c[0].text_input("ASN", placeholder="16509", key="traffic-asn")
    country = c[1].text_input("Country", placeholder="DE", key="traffic-country")
    family = c[2].selectbox("Client family", ["", "docker", "containerd", "podman", "cri-o", "skopeo", "crane",
                                              "kaniko", "buildkit", "other"], key="traffic-family")
    address = c[3].text_input("Address or prefix", placeholder="203.0.113.7 or 203.0.113.0/24", key="traffic-address")

t = ui.get("/v1/stats/traffic", start=start, end=end, bucket=bucket, registry=registry, asn=asn, country=country,
           family=family, image=image, address=address)
if t is None:
    st.stop()
if not t.get("series"):
    st.info("No traffic in this range with these filters. " + ui.NO_TRAFFIC)
    st.stop()

now, before = t.get("totals") or {}, t.get("previous_totals") or {}


def delta(field, scale=1):
    if not before.get(field):
        return None
    return f"{(now.get(field, 0) - before[field]) / before[field] * 100:+.1f}% vs previous"


c = st.columns(4)
c[0].metric("TiB", ui.tib(now.get("bytes")), delta(("bytes")), help=ui.UNITS)
c[1].metric("Requests", f"{now.get('requests', 0):,}", delta("requests"))
c[2].metric("Unique addresses", f"{now.get('addresses', 0):,}", delta("addresses"))
c[3].metric("Pulls", f"{now.get('pulls', 0):,}", delta("pulls"))

shift = datetime.fromisoformat(str(t["end"])) - datetime.fromisoformat(str(t["start"]))
unit = ui.GIB
st.subheader(f"GiB per {t.get('bucket', bucket)}, this period and the one before")
st.altair_chart(charts.compare(t["series"], t.get("previous") or [], shift, "bytes", "GiB (2^30 bytes)", unit),
                width="stretch")
st.subheader(f"Requests per {t.get('bucket', bucket)}")
st.altair_chart(charts.compare(t["series"], t.get("previous") or [], shift, "requests", "requests"),
                width="stretch")

"""Entity: one address, prefix, ASN or user — its hourly profile, images, user agents, every
rule's verdict with its numbers, its decisions and allowlist status; actions for admins."""
import pandas as pd
import streamlit as st

from core import countries
from dashboard import actions, charts, ui

KINDS = ["address", "prefix", "asn", "user"]

st.title("Entity")
chosen = st.session_state.pop("entity", None)
if chosen:                      # opened from Top talkers or Review
    st.session_state["entity-kind"], st.session_state["entity-value"] = chosen["kind"], chosen["value"]
elif "entity-value" not in st.session_state and st.query_params.get("value"):
    st.session_state["entity-kind"] = st.query_params.get("kind", "address")
    st.session_state["entity-value"] = st.query_params["value"]
c = st.columns([1, 3])
kind = c[0].selectbox("Kind", KINDS, key="entity-kind")
value = c[1].text_input("Address, prefix, AS number or user", key="entity-value",
                        placeholder="198.51.100.7 · 198.51.100.0/24 · 16509 · ci-bot").strip()
if not value:
    st.info("Name an entity above, or pick one on **Top talkers** or **Review**.")
    st.stop()
st.query_params.update({"kind": kind, "value": value})      # a link to this view

e = ui.get("/v1/stats/entity", kind=kind, value=value)
if e is None:
    st.stop()
where = " · ".join(str(x) for x in (f"AS{e['asn']}" if e.get("asn") else None, e.get("as_org"),
                                     countries.label(e.get("country"))) if x)
st.subheader(f"{kind} {ui.literal(value)}" + (f" — {ui.literal(where)}" if where else ""))
tot = e.get("totals") or {}
c = st.columns(3)
c[0].metric("GiB (7 days)", ui.gib(tot.get("bytes")), help=ui.UNITS)
c[1].metric("Requests (7 days)", f"{tot.get('requests') or 0:,}")
allow = e.get("allowlisted")
c[2].metric("Allowlist", "allowlisted" if allow else "not listed",
            help=ui.literal(f"{allow.get('kind')} {allow.get('value')}: {allow.get('reason')}") if allow else None)
if not tot.get("requests"):
    st.info("No traffic from this entity in the last 7 days.")

if e.get("hourly"):
    st.markdown("**Hourly profile, 7 days**")
    st.altair_chart(charts.hourly(e["hourly"], e.get("start"), e.get("end")), width="stretch")
c = st.columns(2)
if e.get("images"):
    c[0].markdown("**Images**")
    c[0].dataframe(pd.DataFrame([{**r, "GiB": ui.gib(r.get("bytes"))} for r in e["images"]]).drop(columns=["bytes"], errors="ignore"),
                   hide_index=True, width="stretch")
if e.get("user_agents"):
    c[1].markdown("**User agents**")
    c[1].dataframe(pd.DataFrame(e["user_agents"]), hide_index=True, width="stretch")

def _nearest(failing) -> str:
    """The failed condition nearest its threshold, as explain reports it."""
    if not failing:
        return ""
    f = failing[0]
    if f.get("distance") is None:
        return f"{f['condition']} (false)"
    return f"{f['condition']}: {f['value']:.4g} against {f['threshold']:.4g} ({f['distance']:.0%} away)"


if kind in ("address", "prefix"):            # explain judges addresses and /24 or /64 prefixes
    x = ui.get("/v1/stats/explain", quiet=True, target=value)
    if x and x.get("verdicts"):
        st.markdown(f"**Every rule's verdict** (at {ui.when(x.get('now'))})")
        st.dataframe(pd.DataFrame([{
            "rule": v["rule"], "pack": v.get("pack"), "window": v.get("window"), "matches": v.get("match"),
            "action": v.get("action") + (" (simulated)" if v.get("simulated") else ""),
            "numbers": v.get("reason") or "", "nearest miss": _nearest(v.get("failing")),
            "unbanned": v.get("unbanned") or ""} for v in x["verdicts"]]),
            hide_index=True, width="stretch")

decisions = e.get("decisions") or []
st.markdown("**Decisions, past and present**")
if decisions:
    st.dataframe(pd.DataFrame(ui.local_times(decisions)), hide_index=True, width="stretch")
else:
    st.caption("none")

if ui.is_admin():
    st.markdown("### Actions")
    live = [d for d in decisions if not d.get("revoked_at") and d.get("active", True)]
    actions.entity_actions(kind, value, live, "entity")
else:
    ui.viewer_note()

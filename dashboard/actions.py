"""The admin actions on one entity, shared by Entity and Review: ban, put in a tier, allowlist,
revoke. Each is a form with a required reason (ui.act), through /v1/admin/*."""
from __future__ import annotations

import streamlit as st

from dashboard import ui

SCOPE = {"address": "ip", "prefix": "range", "asn": "asn", "user": "user"}          # entity kind -> decision scope
ALLOW_KIND = {"address": "ip", "prefix": "cidr", "asn": "asn", "user": "user"}
DURATIONS = ["1h", "6h", "24h", "7d", "30d"]


def tiers() -> list[str]:
    """The tiers an entity can be put in (anonymous is what everyone gets without one)."""
    return [n for n in ui.tiers() if n != "anonymous"] or ["throttled", "heavy", "authenticated", "unlimited"]


def entity_actions(kind: str, value: str, in_force: list[dict], key: str) -> None:
    """Ban, tier, allowlist ``value``; revoke one of its decisions in force."""
    if kind not in SCOPE:
        return
    scope = SCOPE[kind]
    c = st.columns(2)
    with c[0], st.form(f"{key}-ban"):
        st.markdown(f"**Ban** {scope} {ui.literal(value)}")
        duration = st.selectbox("For", DURATIONS, index=2, key=f"{key}-ban-for")
        ui.act("Ban", "POST", "/v1/admin/bans", {"scope": scope, "value": value, "duration": duration}, f"{key}-ban")
    with c[1], st.form(f"{key}-tier"):
        st.markdown(f"**Put in a tier** {scope} {ui.literal(value)}")
        names = tiers()
        tier = st.selectbox("Tier", names, index=names.index("throttled") if "throttled" in names else 0,
                            key=f"{key}-tier-name")
        duration = st.selectbox("For", DURATIONS, index=2, key=f"{key}-tier-for")
        ui.act("Assign tier", "POST", "/v1/admin/assignments",
               {"scope": scope, "value": value, "duration": duration, "tier": tier}, f"{key}-tier")
    c = st.columns(2)
    with c[0], st.form(f"{key}-allow"):
        st.markdown(f"**Allowlist** {ALLOW_KIND[kind]} {ui.literal(value)} (revokes its bans, and rules leave it alone)")
        ui.act("Allowlist", "POST", "/v1/admin/allowlist", {"kind": ALLOW_KIND[kind], "value": value}, f"{key}-allow")
    if in_force:
        with c[1], st.form(f"{key}-revoke"):
            st.markdown("**Revoke** a decision in force")
            ids = {d["id"]: f"#{d['id']} {d['effect']}{':' + d['tier'] if d.get('tier') else ''} [{d.get('rule')}]"
                   for d in in_force}
            picked = st.selectbox("Decision", list(ids), format_func=ids.get, key=f"{key}-revoke-id")
            ui.act("Revoke", "DELETE", f"/v1/admin/decisions/{picked}", {}, f"{key}-revoke")

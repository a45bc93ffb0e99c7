"""People look and act, through the enforcer API (Streamlit; not built yet)."""

"""pullwarden's dashboard: `streamlit run dashboard/app.py` (`pullwarden dashboard` does it). It
talks only to the API, with the key it was given: a viewer key sees, an admin key also acts."""
from __future__ import annotations

import streamlit as st

from dashboard import ui

st.set_page_config(page_title="pullwarden", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", default=True),
    st.Page("views/traffic.py", title="Traffic"),
    st.Page("views/top.py", title="Top talkers"),
    st.Page("views/entity.py", title="Entity"),
    st.Page("views/review.py", title="Review"),
    st.Page("views/decisions.py", title="Decisions & audit"),
    st.Page("views/rules.py", title="Rules"),
    st.Page("views/images.py", title="Images"),
    st.Page("views/budget.py", title="Budget & reports"),
]

page = st.navigation(PAGES)
with st.sidebar:
    c = ui.client()
    role = ui.role()
    st.caption(f"API {c.url}" + (f" · {role} key" if role else ""))
    if st.button("Refresh", help="Read everything again from the API (figures are cached for 30 s)"):
        st.cache_data.clear()
ui.flash()
page.run()

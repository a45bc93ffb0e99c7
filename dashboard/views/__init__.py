"""Dashboard pages, run by streamlit from their paths (st.navigation); a package so that an
install ships them."""

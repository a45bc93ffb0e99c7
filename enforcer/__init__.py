"""Stage 3: decisions → published policy → proxies (enforcer API; not built yet)."""

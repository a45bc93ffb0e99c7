"""Stage 3: decisions → numbered policy snapshots → proxies (FastAPI, CrowdSec stream, files)."""

"""The FastAPI app factory: no globals built at import."""
from __future__ import annotations

import duckdb
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from enforcer.deps import CrowdSecForbidden, crowdsec_forbidden
from enforcer.guard import KeyGate
from enforcer.routes import admin, backup, budget, crowdsec, export, health, keys, policy, stats
from enforcer.service import Services


def create_app(services: Services) -> FastAPI:
    # Only /healthz answers without a key: the schema is served to keyed callers at
    # /openapi.json (routes/health.py), the docs pages not at all.
    app = FastAPI(title="pullwarden enforcer", version="1", openapi_url=None, docs_url=None, redoc_url=None,
                  description="Policy for registry-mirror proxies: bans, rate tiers, image lists.")
    app.state.services = services
    app.add_exception_handler(CrowdSecForbidden, crowdsec_forbidden)
    app.add_exception_handler(duckdb.OutOfMemoryException, _out_of_memory)
    for module in (health, policy, crowdsec, admin, export, backup, keys, stats, budget):
        app.include_router(module.router)
    app.include_router(stats.whoami_router)
    app.add_middleware(KeyGate)        # the key and the body's size, before the body is read
    return app


def _out_of_memory(request: Request, exc: duckdb.OutOfMemoryException) -> JSONResponse:
    """A read that DuckDB could not fit is the server's limit, not the caller's fault and not a
    crash: 503 with the setting to change (every unit of work was rolled back; nothing is left
    half done, and the next request is answered as usual)."""
    from core.store import DiskFull
    cfg = request.app.state.services.settings
    if isinstance(exc, DiskFull):
        detail = str(exc)
    else:
        detail = (f"DuckDB ran out of memory answering this: serve_memory_mb = {cfg.serve_memory_mb} MB "
                  f"(detect_memory_mb = {cfg.detect_memory_mb} MB for detection and the backtest). Raise them in "
                  "pullwarden.toml (or PULLWARDEN_SERVE_MEMORY_MB / PULLWARDEN_DETECT_MEMORY_MB), or ask for a "
                  "shorter range")
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "60"})

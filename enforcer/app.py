"""The FastAPI app factory: no globals built at import."""
from __future__ import annotations

from fastapi import FastAPI

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
    for module in (health, policy, crowdsec, admin, export, backup, keys, stats, budget):
        app.include_router(module.router)
    app.include_router(stats.whoami_router)
    app.add_middleware(KeyGate)        # the key and the body's size, before the body is read
    return app

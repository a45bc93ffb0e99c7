"""Dependencies, each named once: the shared services and who is calling."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from enforcer.keys import Principal
from enforcer.service import Services


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


class CrowdSecForbidden(Exception):
    """CrowdSec's LAPI answers a bad key with 403 {"message": "access forbidden"}."""


async def crowdsec_forbidden(_request: Request, _exc: CrowdSecForbidden) -> JSONResponse:
    return JSONResponse({"message": "access forbidden"}, status_code=403)


def require(*roles: str, crowdsec: bool = False):
    """A dependency that admits keys of these roles (admin is always admitted). Who is calling
    was settled before the body was read (enforcer/guard.py); without that, nobody is."""
    allowed = set(roles) | {"admin"}

    async def check(request: Request) -> Principal:
        who = request.scope.get("state", {}).get("principal")
        if who is not None and who.role in allowed:
            return who
        if crowdsec:
            raise CrowdSecForbidden()
        if who is None:
            raise HTTPException(401, "an API key is required (X-Api-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})
        raise HTTPException(403, "this key is not valid for this route")
    return check


ProxyKey = Annotated[Principal, Depends(require("proxy"))]
ViewerKey = Annotated[Principal, Depends(require("viewer"))]
AdminKey = Annotated[Principal, Depends(require())]
AnyKey = Annotated[Principal, Depends(require("proxy", "viewer"))]
BouncerKey = Annotated[Principal, Depends(require("proxy", crowdsec=True))]

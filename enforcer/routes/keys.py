"""API keys over HTTP (admin keys only): create, list, revoke while the server runs, so a
leaked key can be revoked without stopping the proxies' source of policy."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from enforcer import changes, keys
from enforcer.deps import AdminKey, ServicesDep
from enforcer.routes.admin import Body, Reason

router = APIRouter(prefix="/v1/admin/keys", tags=["keys"])
KeyName = Annotated[str, Path(pattern=keys.KEY_NAME.pattern)]


class KeyIn(Body):
    name: str = Field(pattern=keys.KEY_NAME.pattern)
    role: Literal["proxy", "viewer", "admin"]
    reason: Reason


class NewKey(BaseModel):
    name: str
    role: str
    key: str = Field(description="shown this once; only its hash is kept")


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class RevokeIn(Body):
    reason: Reason


@router.post("", response_model=NewKey, status_code=201)
def create(services: ServicesDep, who: AdminKey, body: KeyIn) -> dict:
    with services.lock:
        try:
            key = keys.create_key(services.store, body.name, body.role, services.clock())
        except ValueError as e:
            raise HTTPException(409 if "exists already" in str(e) else 422, str(e)) from None
        changes.audit(services.store, who.name, "create key", f"key {body.name}", {"role": body.role},
                      body.reason, services.clock())
    services.keys.reload()
    return {"name": body.name, "role": body.role, "key": key}


@router.get("", response_model=list[KeyOut])
def list_all(services: ServicesDep, who: AdminKey) -> list[dict]:
    with services.lock:
        return keys.list_keys(services.store)


@router.delete("/{name}", response_model=KeyOut)
def revoke(services: ServicesDep, who: AdminKey, name: KeyName, body: RevokeIn) -> dict:
    """Revoke at once: the next request with that key gets 403."""
    with services.lock:
        try:
            role = keys.revoke_key(services.store, name, services.clock())
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        changes.audit(services.store, who.name, "revoke key", f"key {name}", {"role": role}, body.reason,
                      services.clock())
        row = next(k for k in keys.list_keys(services.store) if k["name"] == name)
    services.keys.reload()
    return row

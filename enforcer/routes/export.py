"""POST /v1/admin/export/parquet: one day of events written as Parquet by the server, for
`pullwarden export parquet` while serve holds the DuckDB file (the command asks day by day, so
it can show progress and no request runs long)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from enforcer.changes import audit
from enforcer.deps import AdminKey, ServicesDep

router = APIRouter(prefix="/v1/admin/export", tags=["admin"])


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dest: str = Field(min_length=2, max_length=4096, description="an absolute folder on the server's file system")
    day: dt.date


@router.get("/span")
def span(services: ServicesDep, who: AdminKey) -> dict:
    """The first and the last day with events (null when there are none)."""
    from reports.export import event_days
    days = services.read(event_days)
    return {"first": days[0] if days else None, "last": days[1] if days else None}


@router.post("/parquet")
def export_parquet(services: ServicesDep, who: AdminKey, body: ExportIn) -> dict:
    """Write DEST/day=DAY/registry=*/events_*.parquet, replacing that day's earlier export; the
    server's file system, the server's user. Audited: an admin key makes the server write files."""
    from reports.export import export_day
    dest = Path(body.dest)
    if not dest.is_absolute() or ".." in dest.parts:
        raise HTTPException(422, f"{body.dest}: give the destination as an absolute path without '..'")
    try:
        done = services.read(lambda store: export_day(store, dest, body.day))
    except OSError as e:
        raise HTTPException(422, f"{body.dest}: {e.strerror or e}") from None
    with services.lock:
        audit(services.store, who.name, "export parquet", str(dest), {"day": body.day, "rows": done["rows"]},
              None, services.clock())
    return done

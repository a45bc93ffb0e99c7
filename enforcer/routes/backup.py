"""POST /v1/admin/backup: a copy of the whole database written by the server while it runs, for
`pullwarden backup DEST` while serve holds the DuckDB file (core/backup.py: one read transaction,
so ingest, detection and admin changes go on meanwhile)."""
from __future__ import annotations

from pathlib import Path

import duckdb
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from enforcer.changes import audit
from enforcer.deps import AdminKey, ServicesDep

router = APIRouter(prefix="/v1/admin/backup", tags=["admin"])


class BackupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dest: str = Field(min_length=2, max_length=4096, description="a new file's absolute path on the server's file system")


class BackupOut(BaseModel):
    path: str
    bytes: int
    seconds: float
    schema_version: int
    verified: bool                  # read back whole after it was written (core/backup.verify)
    rows: dict[str, int]


@router.post("", response_model=BackupOut, status_code=201)
def make_backup(services: ServicesDep, who: AdminKey, body: BackupIn) -> dict:
    """Copy the database to DEST, a file that must not exist yet; the server's file system, the
    server's user. On the analytics thread: it never waits for an ingest run, and no checkpoint
    runs during it. The written file is then read back whole on a DuckDB instance of its own (one
    thread, 64 MB) before it is renamed to DEST. Audited: an admin key makes the server write a file."""
    from core.backup import BackupError, backup
    dest = Path(body.dest)
    if not dest.is_absolute() or ".." in dest.parts:
        raise HTTPException(422, f"{body.dest}: give the destination as an absolute path without '..'")
    try:
        done = services.read(lambda store: backup(store, dest))
    except (OSError, BackupError) as e:
        raise HTTPException(422, str(e)) from None
    except duckdb.Error as e:       # the live database could not be read whole (damaged, out of memory)
        raise HTTPException(503, f"the database could not be copied: {str(e).strip().splitlines()[0]}") from None
    with services.lock:
        audit(services.store, who.name, "backup", str(dest), {"bytes": done["bytes"], "rows": done["rows"]},
              None, services.clock())
    return done

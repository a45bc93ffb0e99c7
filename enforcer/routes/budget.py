"""The budget and the monthly reports (viewer keys): the month's bytes against the budget with
the projection and the guard, a what-if for the anonymous tier, and the reports."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from enforcer.deps import ServicesDep, ViewerKey
from reports import budget as budget_mod

router = APIRouter(prefix="/v1/stats", tags=["budget"])
Month = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM; default: the month of the "
                                                                         "newest data")]


def _status(services, month: str | None) -> dict:
    with services.store.reading() as store:
        try:
            return budget_mod.status(store, services.settings.report_timezone, services.clock(), month)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None


@router.get("/budget")
def budget(services: ServicesDep, who: ViewerKey, month: Month = None) -> dict:
    """Bytes of the month (event time, months in report_timezone) against the monthly budget:
    today, month to date, the projection to the month's end (linear and day-of-week, with a
    band and its method), days until the budget runs out, bytes a day still allowed, and the
    guard's level (with what it did or would do)."""
    out = _status(services, month)
    with services.store.reading() as store:
        from reports import guard
        out["guard"] = {**out["guard"], **guard.remembered(store, out["month"])}
    return out

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
    def run(store):
        try:
            return budget_mod.status(store, services.settings.report_timezone, services.clock(), month)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
    return services.read(run)


@router.get("/budget")
def budget(services: ServicesDep, who: ViewerKey, month: Month = None) -> dict:
    """Bytes of the month (event time, months in report_timezone) against the monthly budget:
    today, month to date, the projection to the month's end (linear and day-of-week, with a
    band and its method), days until the budget runs out, bytes a day still allowed, and the
    guard's level, with what it did or would do (``action``: the anonymous tier's change, done or
    still to come at the next check, simulated while budget_tighten is off; ``action_text`` says it)."""
    from reports import guard
    cfg = services.settings
    out = _status(services, month)

    def run(store):
        anonymous = store.value("select value from kv where key = 'anonymous_tier'") or "anonymous"
        return guard.memory(store), guard.remembered(store, out["month"]), anonymous
    state, remembered, anonymous = services.read(run)
    action = (guard.outlook(out, state, cfg.budget_tighten, cfg.budget_tighten_tier, anonymous)
              if out["month"] else None)
    out["guard"] = {**out["guard"], **remembered, "action": action, "action_text": guard.sentence(action)}
    return out


@router.get("/budget/whatif")
def whatif(services: ServicesDep, who: ViewerKey, month: Month = None,
           tier: Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,40}$",
                                             description="start from this tier's limits")] = None,
           rpm: Annotated[int | None, Query(ge=1, le=10**6, description="requests a minute")] = None,
           burst: Annotated[int | None, Query(ge=1, le=10**6)] = None,
           window_gib: Annotated[float | None, Query(gt=0, le=10**6, description="GiB (2^30 bytes) a window")] = None,
           window_seconds: Annotated[int | None, Query(ge=60, le=10**7)] = None) -> dict:
    """The month's bytes and its projected end if the anonymous tier had these limits (the
    others as the tier has them now): its anonymous traffic replayed through them (method in
    the answer)."""
    from reports import whatif as whatif_mod
    changes = {"requests_per_minute": rpm, "burst": burst,
               "window_bytes": None if window_gib is None else int(window_gib * (1 << 30)),
               "window_seconds": window_seconds}
    def run(store):
        limits = changes
        if tier is not None:
            row = store.execute(f"select {', '.join(whatif_mod.LIMITS)} from tiers where name = ?", [tier])
            if not row:
                raise HTTPException(404, f"no tier {tier!r}")
            limits = {**dict(zip(whatif_mod.LIMITS, row[0])), **{k: v for k, v in changes.items() if v is not None}}
        try:
            return whatif_mod.whatif(store, services.settings.report_timezone, services.clock(), limits, month)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
    return services.read(run)


MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8",
         "pdf": "application/pdf"}


@router.get("/reports")
def reports(services: ServicesDep, who: ViewerKey) -> list[dict]:
    """Months with data and their monthly reports (frozen: made once the month closed, with the
    sha256 of their inputs), newest first."""
    from reports import archive
    def run(store):
        return archive.listing(store, services.settings.report_timezone or "UTC")
    return services.read(run)


@router.get("/reports/{name}")
def report(services: ServicesDep, who: ViewerKey,
           name: Annotated[str, Path(pattern=r"^\d{4}-\d{2}\.(json|csv|html|pdf)$",
                                     description="YYYY-MM.json, .csv, .html or .pdf")]) -> Response:
    """One month's report. A closed month's is frozen at its first request and given as stored
    from then on; a month in progress is computed to the newest data, marked partial."""
    from reports import archive
    month, kind = name.split(".")

    def write(fn):
        with services.lock:
            fn(services.store)
    try:                # the store only for the figures; rendering goes without
        prepared = services.read(lambda store: archive.prepare(store, month, services.settings, services.clock()))
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    r = archive.finish(prepared, write)
    return Response(r.outputs[kind], media_type=MEDIA[kind], headers={
        "Content-Disposition": f'inline; filename="{r.name(kind)}"', "X-Report-Frozen": str(r.frozen).lower(),
        "X-Report-Partial": str(r.partial).lower(), "X-Report-Stale": str(r.stale).lower(),
        "X-Report-Inputs-Sha256": r.inputs_sha256})

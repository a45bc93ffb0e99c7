"""/healthz (no key) and /metrics (Prometheus text)."""
from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request, Response

from enforcer.deps import AnyKey, ServicesDep, ViewerKey

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(services: ServicesDep) -> dict:
    """Whether the last publish, ingest and detection worked; no key needed, no data given. A
    failing job says what failed, when, how many runs in a row, and when it is tried again."""
    failing = {name: job["error"] for name, job in services.jobs.items() if job.get("error")}
    from reports import guard       # the budget guard's level: said here, but `status` stays about the jobs
    with services.store.reading() as store:
        budget = guard.last(store)
    return {"status": "degraded" if failing else "ok", "policy_version": services.publisher.current.version,
            "budget": budget,
            "policy_generated_at": services.publisher.current.generated_at,
            "jobs": {name: _job(job) for name, job in services.jobs.items()}}


def _job(job: dict) -> dict:
    """A job's last success, and while it fails: what, since when, how many runs, next try."""
    out = {"last_ok": job.get("ok"), "error": job.get("error")}
    if job.get("error"):
        out.update({k: job.get(k) for k in ("failed_at", "failures", "retry_at")})
    return out


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, who: AnyKey) -> dict:
    """The API's schema, for any valid key (the server answers nothing without one but /healthz)."""
    return request.app.openapi()


@router.get("/metrics")
def metrics(services: ServicesDep, who: ViewerKey) -> Response:
    with services.store.reading() as store:
        lag = store.value("select epoch(?::timestamp) - epoch(max(ts)) from events", [services.clock()])
        run = store.execute("select lines, seconds, rejects from ingest_runs order by run_id desc limit 1")
        rejects, lines_read, stored = store.execute(
            "select coalesce(sum(rejects), 0), coalesce(sum(lines), 0), coalesce(sum(events), 0) from files")[0]
        kept = store.value("select count(*) from events")
    content = services.publisher.current.content
    lines = [
        "# HELP pullwarden_ingest_lag_seconds Wall clock minus the newest event's time.",
        "# TYPE pullwarden_ingest_lag_seconds gauge",
        f"pullwarden_ingest_lag_seconds {lag if lag is not None else 'NaN'}",
        "# HELP pullwarden_ingest_lines_per_second Lines per second of the last ingest run.",
        "# TYPE pullwarden_ingest_lines_per_second gauge",
        f"pullwarden_ingest_lines_per_second {run[0][0] / run[0][1] if run and run[0][1] else 0}",
        "# HELP pullwarden_ingest_catching_up 1 while ingest catches up on a backlog (larger chunks, every core).",
        "# TYPE pullwarden_ingest_catching_up gauge",
        f"pullwarden_ingest_catching_up {1 if services.catching_up else 0}",
        "# HELP pullwarden_ingest_rejects_total Lines that could not be parsed.",
        "# TYPE pullwarden_ingest_rejects_total counter",
        f"pullwarden_ingest_rejects_total {rejects}",
        "# HELP pullwarden_ingest_lines_total Log lines read, ever.",
        "# TYPE pullwarden_ingest_lines_total counter",
        f"pullwarden_ingest_lines_total {lines_read}",
        "# HELP pullwarden_ingest_events_total Events stored (in events or object_events), ever: not lowered by retention.",
        "# TYPE pullwarden_ingest_events_total counter",
        f"pullwarden_ingest_events_total {stored}",
        "# HELP pullwarden_events Proxy events kept now (keep_events_days).",
        "# TYPE pullwarden_events gauge",
        f"pullwarden_events {kept}",
        "# HELP pullwarden_policy_version The published policy's version.",
        "# TYPE pullwarden_policy_version gauge",
        f"pullwarden_policy_version {services.publisher.current.version}",
        "# HELP pullwarden_active_bans Bans in force.",
        "# TYPE pullwarden_active_bans gauge",
        f"pullwarden_active_bans {len(content['bans'])}",
        "# HELP pullwarden_active_tier_assignments Tier assignments in force.",
        "# TYPE pullwarden_active_tier_assignments gauge",
        f"pullwarden_active_tier_assignments {len(content['assignments'])}",
        "# HELP pullwarden_polls_total Policy and stream polls per key.",
        "# TYPE pullwarden_polls_total counter",
    ]
    lines += [f'pullwarden_polls_total{{key="{name}"}} {n}' for name, n in sorted(services.polls.items())]
    lines += _detection_lines(services.passes)
    lines += _budget_lines(services)
    for name, job in sorted(services.jobs.items()):
        lines.append(f'pullwarden_job_failing{{job="{name}"}} {1 if job.get("error") else 0}')
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _epoch(t: datetime | None):
    return "NaN" if t is None else t.replace(tzinfo=timezone.utc).timestamp()


def _detection_lines(p) -> list[str]:
    """The last detection pass (enforcer.service.Passes); NaN before the first."""
    last = p.last
    lag = last.get("lag")
    return [
        "# HELP pullwarden_detection_lag_seconds When the last pass's decisions were published minus the newest "
        "event it judged: how far the policy is behind the log.",
        "# TYPE pullwarden_detection_lag_seconds gauge",
        f"pullwarden_detection_lag_seconds {'NaN' if lag is None else round(lag, 3)}",
        "# HELP pullwarden_detection_last_pass_timestamp_seconds When the last detection pass (fresh or full) ran.",
        "# TYPE pullwarden_detection_last_pass_timestamp_seconds gauge",
        f"pullwarden_detection_last_pass_timestamp_seconds {_epoch(last.get('now'))}",
        "# HELP pullwarden_detection_newest_event_timestamp_seconds The newest event time the last pass judged.",
        "# TYPE pullwarden_detection_newest_event_timestamp_seconds gauge",
        f"pullwarden_detection_newest_event_timestamp_seconds {_epoch(p.newest)}",
        "# HELP pullwarden_detection_last_full_pass_timestamp_seconds When the last full pass ran.",
        "# TYPE pullwarden_detection_last_full_pass_timestamp_seconds gauge",
        f"pullwarden_detection_last_full_pass_timestamp_seconds {_epoch(p.full_at)}",
        "# HELP pullwarden_detection_pass_seconds How long the last pass took, by kind.",
        "# TYPE pullwarden_detection_pass_seconds gauge",
        f'pullwarden_detection_pass_seconds{{kind="{last.get("kind", "full")}"}} '
        f'{round(last["seconds"], 3) if "seconds" in last else "NaN"}',
    ]


def _budget_lines(services) -> list[str]:
    """The budget guard's last check (reports/guard.py); NaN before its first."""
    from reports import budget, guard
    with services.store.reading() as store:
        last = guard.last(store)
    level = budget.LEVELS.index(last["level"]) if last["level"] in budget.LEVELS else "NaN"
    out = []
    for name, key, text in (("budget_bytes", "budget_bytes", "The monthly budget in bytes."),
                            ("month_bytes", "used_bytes", "Bytes served this month (report_timezone) so far."),
                            ("projected_bytes", "projected_bytes", "Bytes projected at the month's end.")):
        out += [f"# HELP pullwarden_{name} {text}", f"# TYPE pullwarden_{name} gauge",
                f"pullwarden_{name} {last.get(key, 'NaN')}"]
    return out + ["# HELP pullwarden_budget_guard_level The budget guard's level: 0 ok, 1 50% used, 2 80% used, "
                  "3 projection over the budget, 4 100% used.", "# TYPE pullwarden_budget_guard_level gauge",
                  f"pullwarden_budget_guard_level {level}"]

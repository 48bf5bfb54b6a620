"""Liveness (the process answers) and readiness (the database answers, the views are not
stopped before a damaged event and follow the log)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep
from api.errors import ApiProblem
from api.openapi import problems
from api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """The process is up (does not touch the database)."""
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses=problems(503))
async def ready(svc: ServicesDep) -> Readiness:
    """The database answers (503 with Retry-After when it does not), the views are not
    stopped before a damaged event (503 ``views-stopped`` naming its place, never its
    content, until the row is repaired), and they follow the log: 503 ``views-stalled`` when
    they have lacked an event for longer than ``JIAYI_VIEWS_MAX_LAG`` seconds without moving
    (how far behind, for how long)."""
    await run_in_threadpool(svc.store.ping)
    views = None
    if svc.queries is not None:
        found = await run_in_threadpool(svc.queries.following)
        views = found.position
        stopped = found.damaged
        if stopped is not None:
            raise ApiProblem(
                503,
                "views-stopped",
                f"the views stopped before a damaged event ({stopped.place()}): {stopped.reason}",
                position=stopped.position,
                aggregate_id=str(stopped.originator_id),
                version=stopped.version,
                topic=stopped.topic,
            )
        stall = svc.views_watch.stall(found)
        if stall is not None:
            raise ApiProblem(
                503,
                "views-stalled",
                f"the views have not followed the log for {stall.seconds:.0f} s (more than "
                f"{svc.settings.views_max_lag} s): they are at position {stall.position}, "
                f"{stall.behind} behind the log at {stall.log_position}",
                headers={"Retry-After": "5"},
                views_position=stall.position,
                log_position=stall.log_position,
                behind=stall.behind,
                seconds=round(stall.seconds, 1),
            )
    return Readiness(
        status="ready",
        database="postgresql" if svc.settings.uses_postgres else "sqlite",
        views_position=views,
    )

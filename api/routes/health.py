"""Liveness (the process answers) and readiness (the database answers, the views are not
stopped before a damaged event)."""

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
    """The database answers (503 with Retry-After when it does not) and the views are not
    stopped before a damaged event (503 ``views-stopped`` naming its place, never its
    content, until the row is repaired)."""
    await run_in_threadpool(svc.store.ping)
    views = None
    if svc.queries is not None:
        views = await run_in_threadpool(svc.queries.position)
        stopped = await run_in_threadpool(svc.queries.stopped_at)
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
    return Readiness(
        status="ready",
        database="postgresql" if svc.settings.uses_postgres else "sqlite",
        views_position=views,
    )

"""Liveness (the process answers) and readiness (the database answers)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep
from api.openapi import problems
from api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """The process is up (does not touch the database)."""
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses=problems(503))
async def ready(svc: ServicesDep) -> Readiness:
    """The database answers (503 with Retry-After when it does not)."""
    await run_in_threadpool(svc.store.ping)
    views = None
    if svc.queries is not None:
        views = await run_in_threadpool(svc.queries.position)
    return Readiness(
        status="ready",
        database="postgresql" if svc.settings.uses_postgres else "sqlite",
        views_position=views,
    )

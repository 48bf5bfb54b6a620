"""The app factory: one FastAPI application from :class:`Settings` (nothing at import time)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI

from api import errors
from api.idempotency import IdempotencyMiddleware
from api.limits import BodyLimit, SecurityHeaders
from api.metrics import RequestMetrics
from api.metrics import install as install_metrics
from api.requestid import JiayiAPI
from api.routes import MODULES
from api.services import Services
from api.web import install as install_pages
from domain.application import CareCoordination
from jiayi.settings import Settings
from projections.queries import Queries

log = logging.getLogger("jiayi.api")

DESCRIPTION = """\
Commands for every step of the family-doctor contract and two-way referral journey, and
queries over the read models.

**Access.** Send `Authorization: Bearer <token>` (issue one with `jiayi tokens issue`). Each
endpoint admits some roles (`center_staff`, `hospital_staff`, `coordinator`, `auditor`,
`administrator`); another role gets 403. What your organisation may act on or see is decided
by the domain and your scope: anything else reads as 404, the same as if it did not exist.

**Writes** answer `{id, position}`; pass `wait_for_position=<position>` to a query to read
your own write. POST commands accept an `Idempotency-Key` header: a retry returns the first
answer (a search, which only reads, is simply run again).

**Reads are recorded.** Every read of a patient's data (registry entry, search results,
timeline, referral, quota bookings, worklists) is recorded in the read access log: who, which
patient, what, when and how many rows. Auditors read it (`/audit/access`). Search terms travel
in a POST body (`POST /patients/search`), never in a URL.

**Errors** are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
"""


def create_app(
    settings: Settings | None = None,
    app: CareCoordination | None = None,
    queries: Queries | None = None,
    on_stop: Callable[[], None] | None = None,
) -> FastAPI:
    """The HTTP API on ``settings``; ``app``/``queries`` may be given (tests, one process);
    ``on_stop`` runs at the end of a clean stop (the serving process's own closing: on SIGTERM
    uvicorn ends the process right after the lifespan, so nothing after ``uvicorn.run`` runs)."""
    services = Services(settings or Settings(), application=app, queries=queries)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # sync routes run in anyio's worker threads: their number bounds concurrent requests
        to_thread.current_default_thread_limiter().total_tokens = services.settings.http_threads
        # One full collection once everything is built: the start-up's objects settle in the
        # collector's oldest generation now, rather than in a pause of tens of ms under the
        # first requests (the first automatic full collection would fall there).
        gc.collect()
        try:
            yield
        finally:
            # a clean stop writes the read access log's queue before anything closes (on
            # SIGTERM uvicorn ends the process after this: nothing later runs)
            if services.queries is not None:
                try:
                    services.queries.flush()
                except Exception:
                    log.exception("the read access log could not be written at shutdown")
            services.close()
            if on_stop is not None:
                on_stop()

    # every answer carries X-Request-ID; the id is in every log line and event it causes
    api = JiayiAPI(
        title="jiayi (家医) care coordination API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    api.state.services = services
    hide_query_strings()
    errors.install(api)
    api.add_middleware(IdempotencyMiddleware, store=services.idempotency)
    # outermost (added last): bodies are limited before idempotency or authentication read them
    api.add_middleware(BodyLimit, limit=services.settings.http_max_body)
    api.add_middleware(SecurityHeaders)
    if services.settings.metrics_enabled:  # outermost: every answer counted, 413s too
        api.add_middleware(RequestMetrics)
    if services.settings.metrics_on_api:
        install_metrics(api)
    for module in MODULES:
        api.include_router(module.router)
    install_pages(api)
    return api


class QuerylessAccessLog(logging.Filter):
    """Drops the query string from uvicorn's access-log lines: a URL may still carry
    something personal (a search term sent by an old client), and the log is not the place
    for it. The path stays (ids only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            if mark:
                record.args = (*args[:2], path, *args[3:])
        return True


def hide_query_strings(logger: Any = None) -> None:
    """Install :class:`QuerylessAccessLog` on uvicorn's access logger (once)."""
    target = logger or logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QuerylessAccessLog) for f in target.filters):
        target.addFilter(QuerylessAccessLog())

"""RFC 9457 problem details for every failure, from one place.

- validation (request or domain ``InvalidValue``) -> 422 naming the field
- a broken domain rule -> 409 with its stable ``code``
- absent, or not visible to the caller's organisation (``NotFound``/``NotPermitted``) -> 404,
  one body for all of them (code ``not-found``, a fixed detail, no id or path), so existence
  does not leak
- no or unknown token -> 401; a role the endpoint does not allow -> 403
- the database unreachable -> 503 with ``Retry-After``
- too many as-of replays waiting to be built (``ReplaysBusy``) -> 503 ``as-of-busy`` with
  ``Retry-After``
- a stored event not as recorded (``DamagedEvent``) -> 500 ``damaged-event`` with a fixed
  detail (no id, no content); the log names the event's position, aggregate, version, topic

Domain errors (:func:`domain_problem`) and an unreachable database (``UNAVAILABLE_PROBLEM``)
are mapped once; the JSON API and the web pages (``api.web``) both answer with that mapping, so
they cannot diverge.
Under a prefix with a :class:`ProblemPages` renderer installed (``/ui``), the same status and
code come back as an HTML page instead of problem JSON.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError as ESInterfaceError
from eventsourcing.persistence import OperationalError as ESOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.fields import request_field
from domain.common import DomainError, InvalidValue
from eventstore.errors import DamagedEvent
from projections.replays import ReplaysBusy

log = logging.getLogger("jiayi.api")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5

#: Exceptions meaning "the database cannot be reached right now".
UNAVAILABLE: tuple[type[Exception], ...] = (
    ESOperationalError,
    ESInterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class Problem:
    """What a failure is answered with over HTTP, whoever answers (API or pages)."""

    status: int
    code: str
    detail: str
    #: The value at fault (validation), when the error names one.
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


UNAVAILABLE_PROBLEM = Problem(
    503,
    "service-unavailable",
    "the database is unavailable; retry shortly",
    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
)


#: A stored event failed its integrity check: the same answer whatever the event, so it tells
#: nothing of what is stored; the operators find the event in the log (error level).
DAMAGED_PROBLEM = Problem(
    500,
    "damaged-event",
    "A stored record failed its integrity check; the operators have been told.",
)


#: The one answer for "absent" and "not yours", whatever was asked for: the same status, code
#: and detail (no id, no path, no kind of thing), so no answer tells one from the other.
NOT_VISIBLE = "nothing with that id is visible to you"
NOT_FOUND_PROBLEM = Problem(404, "not-found", NOT_VISIBLE)


def domain_problem(exc: DomainError) -> Problem:
    """The one mapping of a domain error to an HTTP status and code."""
    if exc.not_found or exc.forbidden:
        # Absent and "not yours" read the same: nothing with that id is visible to you.
        return NOT_FOUND_PROBLEM
    if isinstance(exc, InvalidValue):
        return Problem(422, exc.code, exc.message, field=exc.details.get("field"))
    return Problem(409, exc.code, exc.message)


@dataclass(frozen=True)
class ProblemPages:
    """Answers a classified problem under ``prefix`` as a page (``app.state.problem_pages``)."""

    prefix: str
    render: Callable[[Request, Problem], Response]

    def applies(self, request: Request) -> bool:
        path = request.url.path
        return path == self.prefix or path.startswith(self.prefix + "/")


def _page(request: Request, found: Problem) -> Response | None:
    pages: ProblemPages | None = getattr(request.app.state, "problem_pages", None)
    if pages is not None and pages.applies(request):
        return pages.render(request, found)
    return None


def answer(request: Request, found: Problem) -> Response:
    """``found`` as the answer to ``request``: a page under the pages' prefix, else problem
    JSON (with the problem's headers)."""
    return _page(request, found) or problem(
        found.status,
        found.code,
        found.detail,
        headers=dict(found.headers),
        instance=_instance(request, found.status),
        field=found.field,
    )


class ApiProblem(Exception):
    """A problem the API itself raises (authentication, roles, read side)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem(
    status: int,
    code: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def unavailable(detail: str = UNAVAILABLE_PROBLEM.detail) -> JSONResponse:
    found = UNAVAILABLE_PROBLEM
    return problem(found.status, found.code, detail, headers=dict(found.headers))


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        head, rest = parts[0], parts[1:]
        return f"{head}.{'.'.join(rest)}" if rest else head
    return ".".join(parts)


async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = errors[0]["field"] if errors else "request"
    return problem(
        422,
        "validation-failed",
        f"invalid value for {first}",
        instance=request.url.path,
        field=first,
        errors=errors,
    )


def _instance(request: Request, status: int) -> str | None:
    """The problem's ``instance``: the request's path, except on a 404, whose body is the
    same whatever id the path names."""
    return None if status == 404 else request.url.path


async def on_domain(request: Request, exc: DomainError) -> Response:
    found = domain_problem(exc)
    page = _page(request, found)
    if page is not None:
        return page
    if found.field is not None:
        # the domain's name for the value, as this request names it (body.on, query.start)
        found = dataclasses.replace(found, field=request_field(request, found.field))
    return problem(
        found.status,
        found.code,
        found.detail,
        headers=dict(found.headers),
        instance=_instance(request, found.status),
        field=found.field,
    )


async def on_api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
    return problem(
        exc.status,
        exc.code,
        exc.detail,
        headers=exc.headers,
        instance=_instance(request, exc.status),
        **exc.extra,
    )


async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "-")
    return problem(
        exc.status_code,
        code,
        str(exc.detail) if exc.detail else None,
        headers=dict(exc.headers or {}),
        instance=request.url.path,
    )


async def on_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return _page(request, UNAVAILABLE_PROBLEM) or unavailable()


def _position_of(request: Request, exc: DamagedEvent) -> int | None:
    """The log position of a damaged event raised without one (the mapper, reading an
    aggregate's events), looked up by aggregate and version; None if that fails too."""
    try:
        recorder = request.app.state.services.application().recorder
        position: int | None = recorder.position_of(exc.originator_id, exc.version)
        return position
    except Exception:
        log.debug("could not look up the position of %s", exc, exc_info=True)
        return None


async def on_damaged(request: Request, exc: DamagedEvent) -> Response:
    position = exc.position
    if position is None:
        position = await run_in_threadpool(_position_of, request, exc)
    log.error(
        "damaged event met on %s %s (%s): %s",
        request.method,
        request.url.path,
        exc.place(position),
        exc.reason,
    )
    found = DAMAGED_PROBLEM
    return _page(request, found) or problem(found.status, found.code, found.detail)


def busy_problem(exc: ReplaysBusy) -> Problem:
    """Too many views as of other moments being built in this process: try again later."""
    return Problem(503, "as-of-busy", str(exc), headers={"Retry-After": str(exc.retry_after)})


async def on_busy(request: Request, exc: ReplaysBusy) -> Response:
    found = busy_problem(exc)
    page = _page(request, found)
    if page is not None:
        return page
    return problem(found.status, found.code, found.detail, headers=dict(found.headers))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "internal-error", "an unexpected error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(DomainError, on_domain)  # type: ignore[arg-type]
    app.add_exception_handler(ApiProblem, on_api_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(DamagedEvent, on_damaged)  # type: ignore[arg-type]
    app.add_exception_handler(ReplaysBusy, on_busy)  # type: ignore[arg-type]
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, on_unavailable)
    app.add_exception_handler(Exception, on_unexpected)

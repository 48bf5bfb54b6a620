"""Documented answers shared by the routes: problem details with examples, and helpers."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from api.errors import NOT_VISIBLE, ApiProblem
from api.schemas import CommandResult, ItemsPage
from domain.application import Outcome


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is stable and machine-readable."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    field: str | None = None


_EXAMPLES: dict[int, tuple[str, dict[str, Any]]] = {
    401: (
        "no or unknown bearer token",
        {"code": "unauthenticated", "detail": "a bearer token is required"},
    ),
    403: (
        "your role may not use this endpoint",
        {"code": "role-not-allowed", "detail": "a auditor may not use this endpoint"},
    ),
    404: (
        "absent, or not visible to your organisation",
        {"code": "not-found", "detail": NOT_VISIBLE},
    ),
    409: (
        "a rule of the domain refused the step",
        {"code": "referral-already-accepted", "detail": "an accepted referral cannot be rejected"},
    ),
    422: (
        "a value is invalid (the field is named)",
        {
            "code": "validation-failed",
            "detail": "invalid value for body.slots",
            "field": "body.slots",
        },
    ),
    503: (
        "the database (or the read side) is unavailable; see Retry-After",
        {"code": "service-unavailable", "detail": "the database is unavailable; retry shortly"},
    ),
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, example = _EXAMPLES[status]
        out[status] = {
            "model": Problem,
            "description": description,
            "content": {
                "application/problem+json": {
                    "example": {
                        "type": f"/problems/{example['code']}",
                        "title": description,
                        "status": status,
                        **example,
                    }
                }
            },
        }
    return out


COMMAND_ERRORS = problems(401, 403, 404, 409, 422, 503)
QUERY_ERRORS = problems(401, 403, 404, 422, 503)


T = TypeVar("T")


def visible(found: T | None) -> T:
    """What a query found in the caller's scope. ``None`` (absent, or outside the scope the
    queries applied) is 404 ``not-found``: the same answer, so existence does not leak."""
    if found is None:
        raise ApiProblem(404, "not-found", NOT_VISIBLE)
    return found


def done(outcome: Outcome) -> CommandResult:
    return CommandResult(id=outcome.id, position=outcome.position)


def paged(items: list[dict[str, Any]], limit: int, offset: int) -> ItemsPage:
    return ItemsPage(
        items=items,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(items) >= limit else None,
    )


def example_response(example: Any, description: str = "OK") -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": description, "content": {"application/json": {"example": example}}}
    }

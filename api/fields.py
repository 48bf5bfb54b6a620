"""Which field of the request a domain error is about, named as the request names it.

The domain names the value at fault (``InvalidValue(field=...)``) by the name requests use for
it. At the HTTP boundary the name is resolved against the route that was called: its body's
fields, its query and its path parameters, in the same form as the request validation errors
(``body.on``, ``query.start``, ``path.booking_id``). A request model may say that a domain name
is one of its own fields under another name (``DOMAIN_FIELDS``, e.g. a new visit's ``visit_id``
is the body's ``id``). A name the route does not have is never answered: the answer names the
whole body (or the request) and the mismatch is logged for the developers, with the field's
name only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request

log = logging.getLogger(__name__)


def route_fields(route: APIRoute) -> dict[str, str]:
    """Every field a request to ``route`` may carry, by its domain name -> its request name
    (worked out once per route)."""
    known: dict[str, str] | None = getattr(route, "_jiayi_fields", None)
    if known is None:
        known = _fields(route)
        route._jiayi_fields = known  # type: ignore[attr-defined]
    return known


def _fields(route: APIRoute) -> dict[str, str]:
    found: dict[str, str] = {}
    dependant = route.dependant

    def add(location: str, params: list[Any]) -> None:
        for p in params:
            found.setdefault(p.name, f"{location}.{p.alias or p.name}")

    add("path", dependant.path_params)
    add("query", dependant.query_params)
    for dep in dependant.dependencies:
        add("path", dep.path_params)
        add("query", dep.query_params)
    bodies = dependant.body_params
    if len(bodies) == 1 and not _embedded(bodies[0]):
        model = bodies[0].field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, info in model.model_fields.items():
                found[name] = f"body.{info.alias or name}"
            aliases: dict[str, str] = getattr(model, "DOMAIN_FIELDS", {})
            for domain_name, own in aliases.items():
                found[domain_name] = f"body.{own}"
    else:
        for b in bodies:
            found[b.name] = f"body.{b.alias or b.name}"
    return found


def _embedded(param: Any) -> bool:
    return bool(getattr(param.field_info, "embed", False))


def request_field(request: Request, field: str) -> str:
    """``field`` (a domain name) as the request ``request`` names it."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return field
    fields = route_fields(route)
    head, _, rest = field.partition(".")
    own = fields.get(head)
    if own is not None:
        return f"{own}.{rest}" if rest else own
    log.error(
        "domain error names field %r, which %s %s does not have",
        head,
        ",".join(sorted(route.methods or ())),
        route.path,
    )
    return "body" if route.dependant.body_params else "request"

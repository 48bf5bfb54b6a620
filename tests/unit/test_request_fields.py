"""Every field the domain names in a refusal is a field some request carries, so the API can
answer with the request's own field (api/fields.py); one it could not resolve would be logged
and answered as the whole body."""

from __future__ import annotations

import ast
from pathlib import Path

from fastapi import FastAPI

from api.fields import route_fields
from tests.unit.test_text_hygiene import all_routes, app  # noqa: F401 (fixture)

DOMAIN = Path(__file__).resolve().parents[2] / "domain"


def domain_fields() -> set[str]:
    """Every field name the domain's InvalidValue refusals carry."""
    found = set()
    for path in DOMAIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("InvalidValue",):
                for k in node.keywords:
                    if k.arg == "field" and isinstance(k.value, ast.Constant):
                        found.add(str(k.value.value))
    return found


#: Values no HTTP request carries (the household's contract ids are made by the API).
NOT_FROM_HTTP = {"ids"}


def test_every_field_the_domain_names_is_a_field_of_some_request(app: FastAPI) -> None:  # noqa: F811
    requests: set[str] = set()
    for route in all_routes(list(app.routes)):
        requests |= set(route_fields(route))
    named = domain_fields()
    assert len(named) > 30  # the walk found the refusals
    assert named - requests - NOT_FROM_HTTP == set()

"""No text enters over HTTP with a control character (issue 15): one check (``domain.text``),
carried by the API's text types (``api.schemas.Clean``) and by the pages' own dependencies
(``api.web.pages.entered`` and ``form``). The walk below covers every route the app serves, so
a new field or parameter that skips the check fails here."""

from __future__ import annotations

import enum
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import AfterValidator, AwareDatetime, BaseModel, ValidationError

from api.main import create_app
from api.schemas import AddDepartment, RecordFollowUp, RequestReferral, StartReturn, _clean
from api.web import pages
from domain.text import first_unwanted, unwanted_reason
from jiayi.settings import Settings

#: Types that cannot carry free text.
_CLOSED = (bool, int, float, bytes, type(None))


def _cleaned(metadata: list[Any]) -> bool:
    return any(isinstance(m, AfterValidator) and m.func is _clean for m in metadata)


def closed(annotation: Any) -> bool:
    """Whether values of ``annotation`` cannot hold free text (numbers, moments, ids)."""
    if annotation is AwareDatetime:
        return True
    return isinstance(annotation, type) and (
        issubclass(annotation, _CLOSED) or annotation.__module__ in ("datetime", "uuid")
    )


def text_leaves(annotation: Any, metadata: list[Any], path: str) -> Iterator[tuple[str, bool]]:
    """Every place in ``annotation`` a free text can go, and whether it is checked."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        yield from text_leaves(base, [*metadata, *extra], path)
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from text_leaves(arg, metadata, path)
    elif origin is Literal:
        return
    elif origin in (list, set, frozenset, tuple):
        for arg in get_args(annotation):
            if arg is not Ellipsis:
                yield from text_leaves(arg, [], f"{path}[]")
    elif origin is dict:
        key, value = get_args(annotation)
        yield from text_leaves(key, [], f"{path}{{key}}")
        yield from text_leaves(value, [], f"{path}{{value}}")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            yield from text_leaves(field.annotation, list(field.metadata), f"{path}.{name}")
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return
    elif annotation is str:
        yield path, _cleaned(metadata)
    elif not closed(annotation):  # Any, or a type this walk does not know: it could hold text
        yield f"{path} ({annotation!r})", False


def params(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    """Every parameter of a route and of the dependencies it declares, with its kind."""
    for kind in ("path", "query", "body", "cookie", "header"):
        for field in getattr(dependant, f"{kind}_params"):
            yield kind, field
    for sub in dependant.dependencies:
        yield from params(sub)


def route_inputs(route: APIRoute) -> Iterator[tuple[str, bool]]:
    for kind, field in params(route.dependant):
        info = field.field_info
        yield from text_leaves(info.annotation, list(info.metadata), f"{kind}.{field.name}")


def calls(dependant: Dependant) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= calls(sub)
    return found


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    data = Path(tmp_path_factory.mktemp("hygiene")) / "data"
    return create_app(Settings(data_dir=data, postgres_url=None))


def all_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every route the app serves, through included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from all_routes(included.routes)


def api_routes(app: FastAPI) -> list[APIRoute]:
    return [r for r in all_routes(app.routes) if not r.path.startswith("/ui")]


def test_every_text_the_api_takes_is_checked_for_control_characters(app: FastAPI) -> None:
    leaves = [
        (f"{sorted(route.methods)} {route.path} {where}", checked)
        for route in api_routes(app)
        for where, checked in route_inputs(route)
    ]
    # the walk finds the texts (bodies, nested models, dict keys, query and path parameters)
    assert len(leaves) > 45
    wheres = {w for w, _ in leaves}
    assert any(".prescriptions[].drug" in w for w in wheres)
    assert any(".measurements{key}" in w for w in wheres)
    assert any(w.endswith("query.district") for w in wheres)
    assert any(w.endswith("path.staff_id") for w in wheres)
    unchecked = sorted(w for w, checked in leaves if not checked)
    assert not unchecked, "text inputs without api.schemas.Clean:\n" + "\n".join(unchecked)


def test_the_walk_notices_a_text_field_without_the_check() -> None:
    class Careless(BaseModel):
        name: str
        notes: list[Annotated[str, AfterValidator(_clean)]]
        extra: dict[str, Any]

    found = dict(text_leaves(Careless, [], "body"))
    assert found["body.name"] is False
    assert found["body.notes[]"] is True
    assert found["body.extra{key}"] is False
    assert any(not checked for w, checked in found.items() if w.startswith("body.extra{value}"))


def test_every_page_checks_its_parameters_and_its_form(app: FastAPI) -> None:
    ui = [r for r in all_routes(app.routes) if r.path.startswith("/ui")]
    assert len(ui) > 15
    for route in ui:
        found = calls(route.dependant)
        assert pages.entered in found, f"{route.path} does not check its query and path"
        if "POST" in route.methods:
            assert pages.form in found, f"{route.path} reads its body without the check"
        # whatever a page declares itself is a query or path parameter: entered checks those
        assert not [f for kind, f in params(route.dependant) if kind == "body"], route.path


@pytest.mark.parametrize(
    "character", ["\x00", "\x01", "\x1e", "\x1f", "\x7f", "\x85", "\x9f", "\ud800"]
)
def test_control_characters_and_lone_surrogates_are_refused(character: str) -> None:
    text = f"心内科{character}"
    assert first_unwanted(text) == (3, character)
    reason = unwanted_reason(text)
    assert reason is not None and f"U+{ord(character):04X} at position 3" in reason


@pytest.mark.parametrize("text", ["王秀英", "line one\nline two\r\n\tindented", "", "a b\u3000c"])
def test_ordinary_text_and_whitespace_pass(text: str) -> None:
    assert unwanted_reason(text) is None


def errors_of(model: type[BaseModel], value: dict[str, Any]) -> list[Any]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(value)
    return caught.value.errors()


def test_a_nul_is_refused_naming_the_field_wherever_it_is() -> None:
    base = {"patient_id": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"}
    found = errors_of(
        RequestReferral,
        {
            **base,
            "hospital_id": base["patient_id"],
            "department": "cardiology\x00",
            "reason": "r",
            "diagnosis": "I10",
        },
    )
    assert [(e["loc"], e["type"]) for e in found] == [(("department",), "control_character")]
    assert "U+0000 at position 10" in found[0]["msg"]
    found = errors_of(
        StartReturn,
        {
            "national_id": "320106195003041236",
            "name": "王秀英",
            "department": "c",
            "summary": "s",
            "follow_up_due": "2026-06-15",
            "prescriptions": [{"drug": "阿司匹林", "dose": "100\x1fmg"}],
        },
    )
    assert [e["loc"] for e in found] == [("prescriptions", 0, "dose")]
    found = errors_of(
        RecordFollowUp,
        {"on": "2026-05-20", "kind": "phone", "measurements": {"systolic_bp\x00": 1}},
    )
    assert found[0]["loc"][:2] == ("measurements", "systolic_bp\x00")
    assert found[0]["type"] == "control_character"
    found = errors_of(
        AddDepartment, {"code": "cardiology", "name": "心内科", "referral_contact": "\x1e"}
    )
    assert [e["loc"] for e in found] == [("referral_contact",)]

"""The exchange's published JSON Schemas, as a partner resolves them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from consumers.messages import SCHEMA_BASE

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "consumers" / "schemas"


@cache
def schema_registry() -> Registry:
    """Every schema in the repository under the URI it is published at."""
    resources = [
        (f"{SCHEMA_BASE}{p.relative_to(SCHEMAS).as_posix()}", json.loads(p.read_text()))
        for p in SCHEMAS.rglob("*.json")
    ]
    return Registry().with_resources(
        (uri, Resource.from_contents(contents)) for uri, contents in resources
    )


def schema_file(uri: str) -> Path:
    """The repository file a ``dataschema`` names (it must be one)."""
    assert uri.startswith(SCHEMA_BASE), uri
    path = SCHEMAS / uri.removeprefix(SCHEMA_BASE)
    assert path.is_file(), f"{uri} names no schema in consumers/schemas/"
    return path


def validate_outbound(message: dict[str, Any]) -> None:
    """The message against the schema its ``dataschema`` names (formats checked too)."""
    schema = json.loads(schema_file(message["dataschema"]).read_text())
    assert schema["$id"] == message["dataschema"]
    Draft202012Validator(
        schema, registry=schema_registry(), format_checker=FormatChecker()
    ).validate(message)

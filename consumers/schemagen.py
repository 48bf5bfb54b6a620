"""The published schema of each outbound type, generated from the domain event classes.

``python -m consumers.schemagen`` writes ``schemas/outbound/<type>.json`` for every domain
event class at its current version (``class_version``), from the class's annotations and with
a patient's personal data left out as :func:`consumers.messages.domain_event` leaves it out.
Schemas of earlier versions stay: messages already published point at them. ``--check`` fails
when a current schema is missing or differs (the unit tests run it): after changing an event
class, run the generator and commit the schema it writes.

Each schema is the envelope (``domain-event.json``, by ``$ref``) plus the type, its
``dataschema`` and the fields of ``data``. Fields may be added to a version (not required by
readers); a field removed, renamed or changed in meaning is a new ``class_version``.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints
from uuid import UUID

from eventsourcing.domain import AggregateEvent
from eventsourcing.utils import get_topic, resolve_topic

from consumers.messages import PERSONAL, SCHEMA_BASE, event_type_name, outbound_schema
from domain.common import Actor

OUTBOUND = Path(__file__).parent / "schemas" / "outbound"
ENVELOPE = "domain-event.json"
_LEFT_OUT = {"originator_id", "originator_version", "timestamp"}
_ACTOR = {
    "type": "object",
    "required": ["staff_id", "org_id"],
    "properties": {"staff_id": {"type": "string"}, "org_id": {"type": "string", "format": "uuid"}},
}


def event_classes() -> list[type]:
    """Every domain event class that is recorded (not the aggregates' ``Event`` bases, nor a
    ``Created`` class the aggregate replaced with its own creation event, nor a private base
    several event classes share, such as ``domain.referrals._ReferralOpened``)."""
    import domain.application  # noqa: F401 - imports every aggregate

    found: dict[str, type] = {}
    todo: list[type] = [AggregateEvent]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        name = cls.__name__
        if cls.__module__.startswith("domain.") and name not in ("Event", "Created"):
            if name.startswith("_"):  # a private base, never recorded itself
                continue
            topic = f"{cls.__module__}:{cls.__qualname__}"
            found[topic] = resolve_topic(topic)  # the class stored events resolve to
    return [found[t] for t in sorted(found)]


def _json(t: Any) -> dict[str, Any]:
    origin, args = get_origin(t), get_args(t)
    if t is Any:
        return {}
    if origin in (Union, types.UnionType):
        options = [_json(a) for a in args if a is not type(None)]
        one = options[0] if len(options) == 1 else {"anyOf": options}
        return {"anyOf": [one, {"type": "null"}]} if type(None) in args else one
    if origin in (list, tuple, set, frozenset):
        return {"type": "array", "items": _json(args[0]) if args else {}}
    if origin is dict or t is dict:
        value = _json(args[1]) if args else {}
        return {"type": "object", **({"additionalProperties": value} if value else {})}
    simple: dict[Any, dict[str, Any]] = {
        UUID: {"type": "string", "format": "uuid"},
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
        datetime: {"type": "string", "format": "date-time"},
        date: {"type": "string", "format": "date"},
        Actor: _ACTOR,
    }
    if t in simple:
        return simple[t]
    if isinstance(t, type) and issubclass(t, Enum):
        return {"enum": [m.value for m in t]}
    raise TypeError(f"no JSON Schema for {t!r}: teach consumers/schemagen.py")


def data_schema(cls: type) -> dict[str, Any]:
    hints = {
        name: t
        for name, t in get_type_hints(cls).items()
        if name not in _LEFT_OUT and get_origin(t) is not ClassVar
    }
    if get_topic(cls).startswith("domain.patients:Patient."):  # as messages._redacted does
        if "birth_date" in hints:
            hints["birth_year"] = int
        hints = {
            k: v
            for k, v in hints.items()
            if k not in PERSONAL and k not in ("birth_date", "birth_month")
        }
    return {
        "type": "object",
        "required": sorted(hints),
        "properties": {name: _json(t) for name, t in sorted(hints.items())},
    }


def schema(cls: type) -> dict[str, Any]:
    type = event_type_name(cls)
    version = getattr(cls, "class_version", None) or 1
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": outbound_schema(type),
        "title": type,
        "description": (
            f"The domain event {cls.__qualname__} ({cls.__module__}), version {version}, as "
            "jiayi publishes it: the envelope of domain-event.json with this type and data. "
            "Generated by consumers/schemagen.py."
        ),
        "allOf": [{"$ref": f"{SCHEMA_BASE}outbound/{ENVELOPE}"}],
        "required": ["dataschema"],
        "properties": {
            "type": {"const": type},
            "dataschema": {"const": outbound_schema(type)},
            "data": data_schema(cls),
        },
    }


def render(cls: type) -> str:
    return json.dumps(schema(cls), indent=2, ensure_ascii=False) + "\n"


def stale(directory: Path = OUTBOUND) -> list[str]:
    """Current outbound types whose schema file is missing or differs from the classes."""
    out = []
    for cls in event_classes():
        path = directory / f"{event_type_name(cls)}.json"
        if not path.exists() or path.read_text() != render(cls):
            out.append(path.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumers.schemagen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a schema is stale")
    args = parser.parse_args(argv)
    names = stale()
    if args.check:
        for name in names:
            print(f"stale or missing: schemas/outbound/{name}", file=sys.stderr)
        return 1 if names else 0
    for cls in event_classes():
        path = OUTBOUND / f"{event_type_name(cls)}.json"
        if path.name in names:
            path.write_text(render(cls))
            print(f"wrote schemas/outbound/{path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

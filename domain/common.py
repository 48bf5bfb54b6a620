"""Values shared by every aggregate: who acted, typed domain errors, stable ids, transcodings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Transcoding

NAMESPACE = UUID("5b0f4a3e-1f0e-4f4f-9a51-6a6979690001")


def stable_id(*parts: object) -> UUID:
    """A deterministic id for a thing named by ``parts`` (same parts, same id)."""
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


#: The pseudo-organisation administrators act for (tokens of the ``administrator`` role,
#: ``jiayi patients erase``): erasing a patient is theirs alone.
ADMINISTRATION = uuid.uuid5(NAMESPACE, "role/administrator/")


@dataclass(frozen=True)
class Actor:
    """Who took a step: a person (staff id) acting for an organisation; ``request_id``: the
    HTTP request that asked for it (X-Request-ID), when one did (None: a partner's message, a
    command, events stored before issue 17)."""

    staff_id: str
    org_id: UUID
    request_id: str | None = None


def add_years(day: date, years: int) -> date:
    """The same calendar day ``years`` later (29 February falls back to 28)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def term_end(start: date, years: int) -> date:
    """Last day of a term of ``years`` starting on ``start``."""
    return add_years(start, years) - timedelta(days=1)


# --- errors -------------------------------------------------------------------------------


class DomainError(Exception):
    """A rule of the domain was broken; ``code`` is stable and machine-readable."""

    code: ClassVar[str] = "domain-rule-broken"
    #: Whether the error means "this does not exist / you may not see it".
    not_found: ClassVar[bool] = False
    #: Whether the error means "your organisation may not take this step".
    forbidden: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    """The thing named does not exist."""

    code = "not-found"
    not_found = True


class NotPermitted(DomainError):
    """The acting organisation may not take this step."""

    code = "not-permitted"
    forbidden = True


class InvalidValue(DomainError):
    """A value is outside what the domain accepts; ``field`` names the value at fault, by the
    name the requests use for it (the API answers with the request's own field: api/fields.py).
    """

    code = "invalid-value"

    def __init__(self, message: str, *, field: str, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class StepBeforePredecessor(DomainError):
    """A back-dated step cannot come before the step it follows."""

    code = "step-before-predecessor"


Moment = TypeVar("Moment", date, datetime)


def ensure_not_before(when: Moment, previous: Moment, step: str, predecessor: str) -> None:
    """``step`` (at ``when``) follows ``predecessor`` (at ``previous``): it is not dated
    earlier. Checked by commands only, never when old events are folded. Moments are named in
    UTC (a zone's offsets before 1900 are local mean time: +08:05:43 in Shanghai)."""
    if when < previous:
        raise StepBeforePredecessor(
            f"the {step} ({_named(when)}) cannot come before the {predecessor} "
            f"({_named(previous)}) it follows",
            step=step,
            predecessor=predecessor,
        )


def _named(moment: date) -> str:
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        return moment.astimezone(UTC).isoformat()
    return moment.isoformat()


# --- transcodings -------------------------------------------------------------------------


class DateAsISO(Transcoding):
    """Stores ``datetime.date`` as ISO text (eventsourcing has no built-in one)."""

    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class ActorAsDict(Transcoding):
    """Stores an :class:`Actor` as a small mapping."""

    type = Actor
    name = "actor"

    def encode(self, obj: Actor) -> dict[str, str]:
        if obj.request_id is None:  # stored as before the request id existed
            return {"staff_id": obj.staff_id, "org_id": obj.org_id.hex}
        return {"staff_id": obj.staff_id, "org_id": obj.org_id.hex, "request_id": obj.request_id}

    def decode(self, data: dict[str, str]) -> Actor:
        return Actor(
            staff_id=data["staff_id"],
            org_id=UUID(data["org_id"]),
            request_id=data.get("request_id"),
        )


def utc(moment: datetime) -> datetime:
    """Reject naive datetimes: every moment in the log is timezone-aware."""
    if moment.tzinfo is None:
        raise InvalidValue("a moment must carry a timezone", field="at", value=str(moment))
    return moment


class OrjsonTranscoder(JSONTranscoder):
    """The library's JSON format, written by orjson (several times faster than ``json`` with a
    Python ``default`` per value): the same transcodings, the same documents, read back by the
    library's decoder.

    orjson writes UUIDs itself (as plain strings, which would come back as strings), so they
    are turned into their transcoding first, wherever they are (also inside what another
    transcoding returns); datetimes, dates and dataclasses are passed to the registered
    transcodings as ``json`` does. What orjson refuses (keys that are not strings, integers
    past 64 bits, unregistered types) goes to the library's encoder, which writes it as before
    or raises its own error. Not the same: a float NaN or infinity is written as ``null``
    (``json`` writes ``NaN``, which is not JSON); the rules reject such measurements.
    """

    OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(self._uuids(obj), default=self._transcode, option=self.OPTIONS)
        except orjson.JSONEncodeError:
            return super().encode(obj)

    def _transcode(self, o: Any) -> Any:
        return self._uuids(self._encode_obj(o))

    def _uuids(self, o: Any) -> Any:
        """``o`` with every UUID in it replaced by its transcoding (leaves are not called)."""
        if isinstance(o, dict):
            return {k: self._uuids(v) if isinstance(v, _WALK) else v for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [self._uuids(v) if isinstance(v, _WALK) else v for v in o]
        if isinstance(o, UUID):
            return self._encode_obj(o)
        return o


_WALK = (UUID, dict, list, tuple)

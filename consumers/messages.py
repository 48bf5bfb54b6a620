"""The message contract: CloudEvents 1.0 in structured mode, and inbound commands.

Structured mode (``content-type: application/cloudevents+json``, the whole envelope in the
value) because a message is then one self-contained document: partners validate it with the
published JSON Schema, a dead letter keeps it whole, and it survives bridges that drop headers.

Inbound: each partner type becomes one immutable command; ``run`` calls one use case of the
application with the partner organisation as the actor. The rules stay in the domain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from functools import cache, lru_cache
from importlib import resources
from typing import Any, ClassVar
from uuid import UUID

import jsonschema_rs
import orjson
from eventsourcing.utils import resolve_topic
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from domain.application import CareCoordination
from domain.common import Actor, stable_id
from domain.followups import FollowUps
from domain.text import UNWANTED

CONTENT_TYPE = "application/cloudevents+json"
PARTNER_STAFF = "partner-system"
_SOURCE = re.compile(r"^urn:jiayi:org:([0-9a-fA-F-]{32,36})$")


class MessageRejected(Exception):
    """A message the consumer cannot apply; ``code`` is stable (the dead letter's reason)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- inbound commands -----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """What a partner message asks the application to do."""

    type: ClassVar[str]

    def touches(self) -> Iterator[UUID]:
        """Aggregates the command will load (read in bulk before a batch)."""
        return iter(())

    def named_patient(self) -> UUID | None:
        """The patient the message's data names (``patient_id``), which its key must be; None
        for types naming a referral or a booking (their patient is found from the stored
        aggregate, which the key is not checked against: that would tell a sender whether a
        referral not its own exists)."""
        return None

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class RequestReferral(Command):
    """The referral up with its form (转出单); ``diagnoses``: (code or None, text) pairs (None
    only from version 1, whose free-text diagnosis carried no code)."""

    type = "cn.jiayi.partner.referral.requested.v2"
    referral_id: UUID
    patient_id: UUID
    hospital_id: UUID
    department: str
    reason: str
    diagnoses: tuple[tuple[str | None, str], ...]
    urgency: str
    past_history: str = ""
    treatment: str = ""
    referring_doctor: str = ""
    doctor_phone: str = ""

    def touches(self) -> Iterator[UUID]:
        # the new referral's id too: the prefetch then knows whether it is taken
        yield from (
            self.referral_id,
            self.patient_id,
            self.hospital_id,
            FollowUps.id_for(self.patient_id),
        )

    def named_patient(self) -> UUID | None:
        return self.patient_id

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.request_referral(
            self.patient_id,
            hospital_id=self.hospital_id,
            department=self.department,
            reason=self.reason,
            diagnoses=[{"code": code, "text": text} for code, text in self.diagnoses],
            past_history=self.past_history,
            treatment=self.treatment,
            referring_doctor=self.referring_doctor,
            doctor_phone=self.doctor_phone,
            urgency=self.urgency,
            actor=actor,
            id=self.referral_id,
            at=at,
        )


@dataclass(frozen=True)
class ReferralStep(Command):
    referral_id: UUID

    def touches(self) -> Iterator[UUID]:
        yield self.referral_id


@dataclass(frozen=True)
class AcceptReferral(ReferralStep):
    type = "cn.jiayi.partner.referral.accepted.v1"
    note: str = ""

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.accept_referral(self.referral_id, actor=actor, note=self.note, at=at)


@dataclass(frozen=True)
class RejectReferral(ReferralStep):
    type = "cn.jiayi.partner.referral.rejected.v1"
    reason_code: str = ""
    note: str = ""

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.reject_referral(
            self.referral_id, reason_code=self.reason_code, actor=actor, note=self.note, at=at
        )


@dataclass(frozen=True)
class RecordArrival(ReferralStep):
    type = "cn.jiayi.partner.patient.arrived.v1"

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.record_arrival(self.referral_id, actor=actor, at=at)


@dataclass(frozen=True)
class ReturnToCommunity(ReferralStep):
    """The return with its form (回转单)."""

    type = "cn.jiayi.partner.patient.discharged.v2"
    summary: str = ""
    prescriptions: tuple[dict[str, Any], ...] = ()
    rehabilitation: str = ""
    follow_up_due: date = date.min
    diagnoses: tuple[tuple[str | None, str], ...] = ()
    inpatient_number: str = ""
    key_results: str = ""
    next_plan: str = ""

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.return_to_community(
            self.referral_id,
            summary=self.summary,
            prescriptions=[dict(p) for p in self.prescriptions],
            rehabilitation=self.rehabilitation,
            follow_up_due=self.follow_up_due,
            actor=actor,
            at=at,
            diagnoses=[{"code": code, "text": text} for code, text in self.diagnoses],
            inpatient_number=self.inpatient_number,
            key_results=self.key_results,
            next_plan=self.next_plan,
        )


@dataclass(frozen=True)
class RecordAttendance(Command):
    type = "cn.jiayi.partner.booking.attended.v1"
    quota_id: UUID
    booking_id: UUID
    attended: bool = True

    def touches(self) -> Iterator[UUID]:
        yield self.quota_id

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.record_attendance(
            self.quota_id, booking_id=self.booking_id, attended=self.attended, actor=actor, at=at
        )


@dataclass(frozen=True)
class RecordNoShow(RecordAttendance):
    type = "cn.jiayi.partner.booking.no-show.v1"
    attended: bool = False


@dataclass(frozen=True)
class RecordFollowUp(Command):
    type = "cn.jiayi.partner.followup.recorded.v2"
    visit_id: UUID
    patient_id: UUID
    on: date
    kind: str
    measurements: dict[str, float] = field(default_factory=dict)
    risk_level: str | None = None
    note: str = ""
    obligation_id: UUID | None = None

    def touches(self) -> Iterator[UUID]:
        yield from (self.patient_id, FollowUps.id_for(self.patient_id))

    def named_patient(self) -> UUID | None:
        return self.patient_id

    def run(self, app: CareCoordination, actor: Actor, at: datetime | None) -> None:
        app.record_follow_up(
            self.patient_id,
            on=self.on,
            kind=self.kind,
            actor=actor,
            measurements=dict(self.measurements),
            risk_level=self.risk_level,
            note=self.note,
            obligation_id=self.obligation_id,
            id=self.visit_id,
            at=at,
        )


def _diagnoses(found: list[dict[str, Any]]) -> tuple[tuple[str | None, str], ...]:
    return tuple((d.get("code"), d["text"]) for d in found)


def _referral(d: dict[str, Any], source: str, id: str) -> RequestReferral:
    """referral.requested v2 (current)."""
    return RequestReferral(
        referral_id=stable_id(source, id),  # a re-published request names the same referral
        patient_id=UUID(d["patient_id"]),
        hospital_id=UUID(d["hospital_id"]),
        department=d["department"],
        reason=d["reason"],
        diagnoses=_diagnoses(d["diagnoses"]),
        urgency=d["urgency"],
        past_history=d.get("past_history", ""),
        treatment=d.get("treatment", ""),
        referring_doctor=d.get("referring_doctor", ""),
        doctor_phone=d.get("doctor_phone", ""),
    )


def referral_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """The data of referral.requested v1 as v2: its free-text diagnosis as one diagnosis with
    no code (as the domain reads referrals recorded before the form), the form's other fields
    empty."""
    out = {k: v for k, v in data.items() if k != "diagnosis"}
    out["diagnoses"] = [{"code": None, "text": data["diagnosis"]}]
    return out


def _discharged(d: dict[str, Any], source: str, id: str) -> ReturnToCommunity:
    """patient.discharged v2 (current)."""
    return ReturnToCommunity(
        UUID(d["referral_id"]),
        summary=d["summary"],
        prescriptions=tuple(d["prescriptions"]),
        rehabilitation=d.get("rehabilitation", ""),
        follow_up_due=date.fromisoformat(d["follow_up_due"]),
        diagnoses=_diagnoses(d["diagnoses"]),
        inpatient_number=d.get("inpatient_number", ""),
        key_results=d.get("key_results", ""),
        next_plan=d.get("next_plan", ""),
    )


def discharged_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """The data of patient.discharged v1 as v2: no diagnoses, the return form's new fields
    empty (what the domain reads for returns recorded before the form)."""
    return {**data, "diagnoses": []}


#: Measurements of followup.recorded v2 -> (the domain's name, conversions to its unit).
_MEASUREMENTS: dict[str, tuple[str, dict[str, float]]] = {
    "systolic_bp": ("systolic_bp", {"mmHg": 1.0}),
    "diastolic_bp": ("diastolic_bp", {"mmHg": 1.0}),
    "fasting_glucose": ("fasting_glucose", {"mmol/L": 1.0, "mg/dL": 1 / 18.016}),
    "weight": ("weight_kg", {"kg": 1.0}),
    "heart_rate": ("heart_rate", {"/min": 1.0}),
}


def _measurement(name: str, quantity: dict[str, Any]) -> tuple[str, float]:
    domain_name, units = _MEASUREMENTS[name]
    factor = units[quantity["unit"]]
    value = float(quantity["value"])
    return domain_name, value if factor == 1.0 else round(value * factor, 2)


def _followup(d: dict[str, Any], source: str, id: str) -> RecordFollowUp:
    """followup.recorded v2 (current)."""
    risk = d.get("risk_level")
    return RecordFollowUp(
        visit_id=stable_id(source, id),
        patient_id=UUID(d["patient_id"]),
        on=date.fromisoformat(d["on"]),
        kind=d["kind"],
        measurements=dict(_measurement(k, q) for k, q in d.get("measurements", {}).items()),
        risk_level=None if risk is None else str(risk),
        note=d.get("note", ""),
        obligation_id=UUID(d["obligation_id"]) if d.get("obligation_id") else None,
    )


#: followup.recorded v1's measurement names -> v2's name and the unit v1 implied.
_V1_MEASUREMENTS = {
    "systolic_bp": ("systolic_bp", "mmHg"),
    "diastolic_bp": ("diastolic_bp", "mmHg"),
    "fasting_glucose": ("fasting_glucose", "mmol/L"),
    "weight_kg": ("weight", "kg"),
    "heart_rate": ("heart_rate", "/min"),
}


def followup_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """The data of followup.recorded v1 as v2: each measurement with the unit v1 implied,
    ``risk_level`` "0"-"5" as an integer. v1 let any measurement name through; one the domain
    does not know is refused as the domain refused it (``invalid-value``)."""
    out = {k: v for k, v in data.items() if k not in ("measurements", "risk_level")}
    if data.get("risk_level") is not None:
        out["risk_level"] = int(data["risk_level"])
    if "measurements" in data:
        out["measurements"] = {}
        for name, value in data["measurements"].items():
            if name not in _V1_MEASUREMENTS:
                raise MessageRejected("invalid-value", f"unknown measurement {name!r}")
            new, unit = _V1_MEASUREMENTS[name]
            out["measurements"][new] = {"value": value, "unit": unit}
    return out


Translate = Callable[[dict[str, Any], str, str], Command]
Upcast = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Deprecated:
    """A previous version of an inbound type: accepted before ``sunset`` (a calendar day in the
    application's time zone, by the application's clock), dead-lettered from that day on
    (``unsupported-version``). ``upcast`` turns its data into the next version's data."""

    sunset: date
    upcast: Upcast

    @property
    def last_day(self) -> date:
        return self.sunset - timedelta(days=1)


@dataclass(frozen=True)
class InboundType:
    """A partner message type: its current version, translated to a command, and the previous
    versions still accepted for a deprecation period (each upcast to the next, up to the
    current one; an upcaster stays while an older version that goes through it is accepted)."""

    name: str
    current: int
    translate: Translate
    previous: Mapping[int, Deprecated] = field(default_factory=dict)

    def type(self, version: int | None = None) -> str:
        return f"{self.name}.v{self.current if version is None else version}"

    def upcast(self, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` of ``version`` as the current version's data."""
        for v in range(version, self.current):
            data = self.previous[v].upcast(data)
        return data


#: followup.recorded v1: accepted for six months after v2 was published (2026-11-30), that is
#: until 2027-05-31; refused from this day.
FOLLOWUP_V1_SUNSET = date(2027, 6, 1)
#: referral.requested v1 and patient.discharged v1 (before the two-way referral form): likewise
#: accepted for six months after their v2 (2026-11-30), until 2027-05-31.
REFERRAL_FORM_V1_SUNSET = date(2027, 6, 1)


def _inbound(command: type[Command], translate: Translate, **previous: Deprecated) -> InboundType:
    name, _, version = command.type.rpartition(".v")
    return InboundType(name, int(version), translate, {int(v[1:]): d for v, d in previous.items()})


#: Every inbound type by name (the type without its version).
INBOUND = {
    t.name: t
    for t in (
        _inbound(
            RequestReferral,
            _referral,
            v1=Deprecated(REFERRAL_FORM_V1_SUNSET, referral_v1_to_v2),
        ),
        _inbound(
            AcceptReferral,
            lambda d, s, i: AcceptReferral(UUID(d["referral_id"]), note=d.get("note", "")),
        ),
        _inbound(
            RejectReferral,
            lambda d, s, i: RejectReferral(
                UUID(d["referral_id"]), reason_code=d["reason_code"], note=d.get("note", "")
            ),
        ),
        _inbound(RecordArrival, lambda d, s, i: RecordArrival(UUID(d["referral_id"]))),
        _inbound(
            ReturnToCommunity,
            _discharged,
            v1=Deprecated(REFERRAL_FORM_V1_SUNSET, discharged_v1_to_v2),
        ),
        _inbound(
            RecordAttendance,
            lambda d, s, i: RecordAttendance(UUID(d["quota_id"]), UUID(d["booking_id"])),
        ),
        _inbound(
            RecordNoShow, lambda d, s, i: RecordNoShow(UUID(d["quota_id"]), UUID(d["booking_id"]))
        ),
        _inbound(RecordFollowUp, _followup, v1=Deprecated(FOLLOWUP_V1_SUNSET, followup_v1_to_v2)),
    )
}
#: The current inbound types.
INBOUND_TYPES = tuple(sorted(t.type() for t in INBOUND.values()))
#: Every accepted inbound type: the current ones and the deprecated ones (each has a schema).
ACCEPTED_TYPES = tuple(
    sorted(t.type(v) for t in INBOUND.values() for v in (t.current, *t.previous))
)
_VERSIONED = re.compile(r"^(.+)\.v([0-9]{1,6})$")


@lru_cache(maxsize=256)
def resolve(type: str, today: date) -> tuple[InboundType, int, Deprecated | None]:
    """The inbound type and version a message's ``type`` names (and the deprecation, if it is a
    previous version), or :class:`MessageRejected`: ``unknown-type``, or
    ``unsupported-version`` for a version never or no longer accepted on ``today``."""
    match = _VERSIONED.match(type)
    name, version = (match.group(1), int(match.group(2))) if match else (type, None)
    spec = INBOUND.get(name)
    if spec is None:
        raise MessageRejected("unknown-type", f"unknown message type {type!r}")
    if version == spec.current:
        return spec, version, None
    old = spec.previous.get(version) if version is not None else None
    if version is None or old is None:
        raise MessageRejected(
            "unsupported-version",
            f"{type!r} is not a supported version; the current version is {spec.type()}",
        )
    if today >= old.sunset:
        raise MessageRejected(
            "unsupported-version",
            f"{type} was accepted until {old.last_day.isoformat()}; "
            f"the current version is {spec.type()}",
        )
    return spec, version, old


def _schema(type: str) -> dict[str, Any]:
    text = resources.files("consumers").joinpath(f"schemas/inbound/{type}.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def validator(type: str) -> Draft202012Validator:
    """The reference validator: used to explain a violation precisely."""
    return Draft202012Validator(_schema(type))


@cache
def fast_check(type: str) -> Callable[[Any], Any]:
    """The same schema compiled by jsonschema-rs (formats checked too): the hot path for valid
    messages, about four times faster than fastjsonschema's generated Python here."""
    return jsonschema_rs.validator_for(_schema(type), validate_formats=True).validate


@dataclass(frozen=True)
class PartnerMessage:
    """A valid partner CloudEvent: who sent it, its identity, and the command it carries."""

    source: str
    id: str
    type: str
    org_id: UUID
    staff_id: str
    at: datetime | None
    command: Command
    #: When ``type`` is a deprecated version: the day it is refused from.
    sunset: date | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.id)

    @property
    def actor(self) -> Actor:
        return Actor(self.staff_id, self.org_id)


#: Control characters refused in any text of a partner message (values and names): the one
#: definition of every boundary (``domain.text``: C0 but TAB, LF and CR, DEL, C1). NUL cannot
#: be stored by PostgreSQL in text; the others corrupt logs, CSV reports and pages.
CONTROL = UNWANTED
#: Where one may hide in a JSON document: escaped (``\u0000``-``\u001f``, ``\u007f``-
#: ``\u009f``, ``\b``, ``\f``) or raw (DEL; C1 in UTF-8; raw C0 is no valid JSON). A message
#: without any of these (nearly all) is not walked. (A lone surrogate never gets here: the
#: JSON parser refuses it as malformed.)
_MAYBE_CONTROL = re.compile(
    rb"\\u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])|\\[bf]|\x7f|\xc2[\x80-\x9f]"
)


def control_character(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a decoded JSON document) the first control character is and which
    (``data/note: control character U+0000 at character 12``), or None. Walked with a stack
    of its own, not by recursion: a hostile document nested a thousand deep is answered too."""
    # (where the parent is, the field's name or None at the top, the value): in document order
    stack: list[tuple[str, Any, Any]] = [(where, None, value)]
    while stack:
        parent, name, item = stack.pop()
        if name is not None:
            in_name = CONTROL.search(name) if isinstance(name, str) else None
            if in_name is not None:
                what = f"control character U+{ord(in_name.group()):04X}"
                return f"{parent or '(root)'}: {what} in the name of a field"
        at = parent if name is None else (f"{parent}/{name}" if parent else str(name))
        if isinstance(item, str):
            found = CONTROL.search(item)
            if found is not None:
                what = f"control character U+{ord(found.group()):04X}"
                return f"{at or '(root)'}: {what} at character {found.start()}"
        elif isinstance(item, dict):
            stack.extend((at, k, v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((at, i, v) for i, v in reversed(list(enumerate(item))))
    return None


#: A schema violation's message longer than this says which rule it broke instead (the
#: validator's message repeats the offending value, which may be long).
_VIOLATION_TEXT = 200


def decode(value: bytes | None, today: date) -> PartnerMessage:
    """Parse, validate and translate one message, or raise :class:`MessageRejected`. A previous
    version of a type is validated against its own schema and upcast to the current version's
    data, while it is accepted on ``today`` (the application's calendar day)."""
    try:
        envelope = orjson.loads(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageRejected("malformed-message", f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MessageRejected("malformed-message", "a CloudEvent is a JSON object")
    if _MAYBE_CONTROL.search(value or b""):
        where = control_character(envelope)
        if where is not None:
            raise MessageRejected("control-character", where)
    type = envelope.get("type")
    if not isinstance(type, str):
        raise MessageRejected("unknown-type", f"unknown message type {type!r}")
    spec, version, deprecated = resolve(type, today)
    try:
        fast_check(type)(envelope)
    except jsonschema_rs.ValidationError as exc:
        error = best_match(validator(type).iter_errors(envelope))
        if error is None:  # only the compiled one objects (it also checks formats)
            where = "/".join(str(p) for p in exc.instance_path) or "(root)"
            what = exc.message
            if len(what) > _VIOLATION_TEXT:
                what = what[:_VIOLATION_TEXT] + "…"
        else:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            what = error.message
            if len(what) > _VIOLATION_TEXT:
                rule = json.dumps(error.validator_value, ensure_ascii=False)
                if len(rule) > 60:
                    rule = rule[:60] + "…"
                what = f"breaks {error.validator} {rule}"
        raise MessageRejected("schema-violation", f"{where}: {what}") from None
    source: str = envelope["source"]
    match = _SOURCE.match(source)
    if match is None:  # pragma: no cover - the schema's pattern already says so
        raise MessageRejected("unknown-source", f"source {source!r} names no organisation")
    data = envelope["data"]
    try:
        at = datetime.fromisoformat(envelope["time"]) if "time" in envelope else None
        if at is not None and at.tzinfo is None:
            raise ValueError("time needs a timezone")
        current = data if deprecated is None else spec.upcast(version, data)
        command = spec.translate(current, source, envelope["id"])
    except ValueError as exc:
        raise MessageRejected("schema-violation", str(exc)) from None
    return PartnerMessage(
        source=source,
        id=envelope["id"],
        type=type,
        org_id=UUID(match.group(1)),
        staff_id=data.get("staff_id") or PARTNER_STAFF,
        at=at,
        command=command,
        sunset=None if deprecated is None else deprecated.sunset,
    )


def partner_event(
    type: str,
    org_id: UUID,
    id: str,
    data: dict[str, Any],
    time: datetime | None = None,
) -> bytes:
    """Encode a partner CloudEvent (what partner systems send; for tests and the benchmark)."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": id,
        "source": f"urn:jiayi:org:{org_id}",
        "type": type,
        "datacontenttype": "application/json",
        "data": data,
    }
    if time is not None:
        envelope["time"] = time.isoformat()
    return json.dumps(envelope, default=_json_default, ensure_ascii=False).encode()


# --- outbound ------------------------------------------------------------------------------

APPLICATION_SOURCE = "urn:jiayi:app:carecoordination"
#: Where the schemas are published: ``consumers/schemas/`` in this repository is this base.
SCHEMA_BASE = "https://jiayi.example/schemas/"
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def event_type_name(cls: type) -> str:
    """``Referral.PatientArrived`` (version 2) -> ``cn.jiayi.referral.patient-arrived.v2``: the
    version is the event class's ``class_version`` (eventsourcing's; 1 when not set), so an
    event upcast to a new version goes out as that version."""
    aggregate, _, name = cls.__qualname__.partition(".")
    version = getattr(cls, "class_version", None) or 1
    return (
        f"cn.jiayi.{_CAMEL.sub('-', aggregate).lower()}.{_CAMEL.sub('-', name).lower()}.v{version}"
    )


@cache
def outbound_type(topic: str) -> str:
    """``domain.referrals:Referral.PatientArrived`` -> ``cn.jiayi.referral.patient-arrived.v1``
    (the class the stored topic resolves to names the type and gives its version)."""
    return event_type_name(resolve_topic(topic))


def outbound_schema(type: str) -> str:
    """The ``dataschema`` of an outbound type: its published schema (``schemas/outbound/``)."""
    return f"{SCHEMA_BASE}outbound/{type}.json"


def _json_default(obj: object) -> Any:
    if isinstance(obj, UUID):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Actor):
        return {"staff_id": obj.staff_id, "org_id": str(obj.org_id)}
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if isinstance(obj, Enum):
        return obj.value
    raise TypeError(f"cannot encode {type(obj).__name__}")


#: A patient's personal data never leaves in integration events, even when the events are
#: encrypted at rest: partners get the patient's id (subject, key), sex, district, center and
#: key-population tags; a partner that needs more asks the registry through the API.
PERSONAL = frozenset({"name", "national_id", "phone"})
_PATIENT_TOPIC = "domain.patients:Patient."


def _redacted(topic: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` of a patient's event without personal data; the birth date as a year."""
    if not topic.startswith(_PATIENT_TOPIC):
        return fields
    out = {
        k: v
        for k, v in fields.items()
        if k not in PERSONAL and k not in ("birth_date", "birth_month")
    }
    birth, month = fields.get("birth_date"), fields.get("birth_month")
    if isinstance(birth, date):
        out["birth_year"] = birth.year
    elif isinstance(month, str):
        out["birth_year"] = int(month[:4])
    return out


def domain_event(
    event: Any,
    topic: str,
    position: int,
    app_name: str,
    patient_id: UUID,
    cut: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> bytes:
    """Encode one domain event as an integration CloudEvent; the id is stable per position.
    ``cut`` leaves out what one recipient does not get (:mod:`consumers.routing`)."""
    fields = _redacted(
        topic,
        {
            k: v
            for k, v in vars(event).items()
            if k not in ("originator_id", "originator_version", "timestamp")
        },
    )
    if cut is not None:
        fields = cut(fields)
    at = fields.get("at")
    type = outbound_type(topic)
    envelope = {
        "specversion": "1.0",
        "id": f"{app_name}:{position}",
        "source": APPLICATION_SOURCE,
        "type": type,
        "dataschema": outbound_schema(type),
        "subject": str(event.originator_id),
        "time": (at if isinstance(at, datetime) else event.timestamp).isoformat(),
        "datacontenttype": "application/json",
        "partitionkey": str(patient_id),
        "sequence": str(position),
        "aggregateid": str(event.originator_id),
        "aggregateversion": event.originator_version,
        "recordedat": event.timestamp.isoformat(),
        "data": fields,
    }
    return json.dumps(envelope, default=_json_default, ensure_ascii=False).encode()

"""Which fields of which events are a patient's personal data, and whose.

The domain declares it here, once; the event store encrypts those fields with the patient's
own data key when it stores an event (``eventstore.personal``), so erasing the patient
(destroying that key) leaves nothing of them readable. Every text field of every event class is
either listed here or in :data:`NOT_PERSONAL` with the reason
(``tests/unit/test_personal_data.py`` fails on a field in neither), so a new free-text field
cannot be stored in plain text by omission.

Within a listed field every text (and date) value is encrypted, also inside lists and
mappings (a return plan's summary, a prescription's drug); numbers, flags and ids stay as
they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEvent

from domain.contracts import Contract
from domain.followups import FollowUps
from domain.organisations import Organisation
from domain.patients import Patient
from domain.quotas import Quota
from domain.referrals import Referral
from domain.teams import CareTeam

#: Aggregate -> event name -> its personal fields.
PERSONAL: dict[type[Aggregate], dict[str, tuple[str, ...]]] = {
    Patient: {
        "Registered": ("name", "birth_date", "national_id", "phone"),
        "MovedAway": ("destination",),
        "TransferRequested": ("consent",),
        "TransferDeclined": ("reason",),
    },
    Contract: {"TeamChanged": ("reason",), "Terminated": ("reason",)},
    FollowUps: {"VisitRecorded": ("note",), "Withdrawn": ("reason",)},
    Referral: {
        "Requested": ("reason", "diagnoses", "past_history", "treatment", "return_plan"),
        "ReturnStarted": ("reason", "diagnoses", "past_history", "treatment", "return_plan"),
        "Accepted": ("note",),
        "Rejected": ("note",),
        "Cancelled": ("reason",),
        "ReturnedToCommunity": (
            "summary",
            "prescriptions",
            "rehabilitation",
            "diagnoses",
            "inpatient_number",
            "key_results",
            "next_plan",
        ),
    },
    Quota: {"BookingCancelled": ("reason",)},
}

#: Text fields that are not a patient's personal data, each with why.
NOT_PERSONAL: dict[str, str] = {
    "CareTeam.Formed.name": "a team's name",
    "CareTeam.MemberJoined.staff_id": "staff, acting for their organisation",
    "CareTeam.MemberJoined.name": "staff, acting for their organisation",
    "CareTeam.MemberJoined.role": "a role code",
    "CareTeam.MemberLeft.staff_id": "staff, acting for their organisation",
    "Contract.Signed.package": "a service package code",
    "FollowUps.VisitRecorded.kind": "a visit kind code",
    "FollowUps.VisitRecorded.measurements": "named numbers (blood pressure, glucose): no text",
    "FollowUps.Scheduled.obligations": "reason codes, sources and due dates (counted by KPIs)",
    "FollowUps.VisitRecorded.risk_level": "a risk level code (counted by the KPIs)",
    "Organisation.DepartmentAdded.code": "an organisation's department",
    "Organisation.DepartmentAdded.name": "an organisation's department",
    "Organisation.DepartmentAdded.referral_contact": "a department's desk",
    "Organisation.Registered.kind": "an organisation",
    "Organisation.Registered.name": "an organisation",
    "Organisation.Registered.district": "an organisation",
    "Patient.Registered.sex": "counted by the KPIs; not identifying alone",
    "Patient.Registered.district": "where care is given (scopes, KPIs); thousands share one",
    "Patient.Registered.birth_month": "age bands for the KPIs, kept after erasure",
    "Patient.Tagged.tag": "a key-population code (counted by the KPIs)",
    "Patient.Untagged.tag": "a key-population code (counted by the KPIs)",
    "Patient.Transferred.district": "where care is given",
    "Patient.Erased.reason": "the legal ground of an erasure, which must outlive it",
    "Quota.Published.kind": "a hospital's offer",
    "Quota.Published.department": "a hospital's offer",
    "Quota.Published.expert": "staff, acting for their hospital",
    "Quota.Published.ward": "a hospital's offer",
    "Quota.Published.half_day": "a hospital's offer",
    "Quota.Published.reserved_for_district": "a hospital's offer",
    "Referral.Requested.department": "a hospital's department",
    "Referral.Requested.direction": "a code",
    "Referral.Requested.urgency": "a code",
    "Referral.Requested.referring_doctor": "staff, acting for their organisation (the form's "
    "signature)",
    "Referral.Requested.doctor_phone": "the referring doctor's work number, for the hospital",
    "Referral.ReturnStarted.department": "a hospital's department",
    "Referral.ReturnStarted.referring_doctor": "staff, acting for their organisation (empty on "
    "a return)",
    "Referral.ReturnStarted.doctor_phone": "the referring doctor's work number (empty on a return)",
    "Referral.ReturnStarted.direction": "a code",
    "Referral.ReturnStarted.urgency": "a code",
    "Referral.Rejected.reason_code": "a code",
    "Referral.PatientAdmitted.ward": "a hospital's ward",
}

#: The personal field a patient is found by, through a keyed hash (blind index) kept beside
#: the patient's key (``eventstore.keys``): one per patient.
BLIND_INDEXED: dict[type[Aggregate], dict[str, tuple[str, ...]]] = {
    Patient: {"Registered": ("national_id",)},
}

#: Aggregates with no personal data, listed so that the test sees every aggregate.
WITHOUT_PERSONAL_DATA = (Organisation, CareTeam)


def _by_class(
    declared: Mapping[type[Aggregate], Mapping[str, tuple[str, ...]]],
) -> dict[type[DomainEvent], tuple[str, ...]]:
    found: dict[type[DomainEvent], tuple[str, ...]] = {}
    for aggregate, events in declared.items():
        for name, fields in events.items():
            cls = vars(aggregate).get(name)
            if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
                raise LookupError(f"{aggregate.__qualname__} declares no event {name!r}")
            found[cls] = fields
    return found


#: Event class -> its personal fields.
PERSONAL_FIELDS = _by_class(PERSONAL)
#: Event class -> its blind-indexed fields.
BLIND_INDEX_FIELDS = _by_class(BLIND_INDEXED)

#: The patient each event being stored is about (``id(event)`` -> patient id), set by the unit
#: of work around writing, read by the event store's mapper.
SUBJECTS: ContextVar[Mapping[int, UUID]] = ContextVar(
    "personal_subjects", default=MappingProxyType({})
)


class NoSubject(Exception):
    """An event holds personal data and nothing says whose: it is not stored."""


def subject_of(aggregate: Aggregate | None, event: DomainEvent) -> UUID:
    """The patient ``event`` (of ``aggregate``) holds personal data of."""
    if isinstance(aggregate, Patient) or isinstance(event, Patient.Event):
        return event.originator_id
    if isinstance(aggregate, Quota):
        booking_id = getattr(event, "booking_id", None)
        booking = aggregate.bookings.get(booking_id) if isinstance(booking_id, UUID) else None
        if booking is not None:
            patient: UUID = booking["patient_id"]
            return patient
    found = getattr(event, "patient_id", None) or getattr(aggregate, "patient_id", None)
    if not isinstance(found, UUID):
        raise NoSubject(f"whose personal data {type(event).__qualname__} holds is not known")
    return found


def normalise_identifier(text: str) -> str:
    """A resident id number as it is indexed and looked up: trimmed, ``x`` as ``X``."""
    return text.strip().upper()


def found_by(events: Iterable[Any]) -> dict[UUID, str]:
    """The identifier each patient registered by these events is found by (their resident id
    number): kept as a blind index beside the patient's key, never in the views."""
    found: dict[UUID, str] = {}
    for e in events:
        for name in BLIND_INDEX_FIELDS.get(type(e), ()):
            value = getattr(e, name, None)
            if isinstance(value, str) and value.strip():
                found[e.originator_id] = value
    return found


def subjects(events: Iterable[Any], aggregates: Mapping[UUID, Any]) -> dict[int, UUID]:
    """``id(event)`` -> patient, for the events that hold personal data."""
    return {
        id(e): subject_of(aggregates.get(e.originator_id), e)
        for e in events
        if type(e) in PERSONAL_FIELDS
    }

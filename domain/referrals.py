"""Two-way referrals (双向转诊): up to a hospital and back to the community, one stream each."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.common import (
    Actor,
    DomainError,
    InvalidValue,
    NotFound,
    NotPermitted,
    ensure_not_before,
)

#: The family doctor follows up within two weeks of an upward referral (转诊后2周内主动随访).
FOLLOW_UP_AFTER_REFERRAL = timedelta(days=14)


#: An ICD-10 code as written on the form: a chapter letter (A-Z: U is kept, WHO uses U07.1 for
#: COVID-19), two digits, and optionally a dot and 1-4 letters or digits (``E11.9``, ``I10``,
#: ``E11.65``). Checked after trimming and upper-casing.
ICD10 = re.compile(r"^[A-Z][0-9]{2}(?:\.[0-9A-Z]{1,4})?$")
#: A contact number, loosely: digits with spaces, dashes, brackets or a leading ``+`` (a
#: mobile, ``025-83262000``, ``+86 25 8326 2000``), 5 to 20 digits in all.
PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]*$")
#: The return form's fields (回转单) besides the summary, prescriptions and rehabilitation advice.
RETURN_FORM_FIELDS = ("diagnoses", "inpatient_number", "key_results", "next_plan")


def diagnoses_of(
    found: Sequence[Mapping[str, Any]], field: str = "diagnoses"
) -> list[dict[str, Any]]:
    """Diagnoses as the form records them: each an ICD-10 ``code`` (trimmed, upper case; None
    only for a diagnosis written before the form had codes) and its ``text`` (required)."""
    out: list[dict[str, Any]] = []
    for n, item in enumerate(found):
        code = item.get("code")
        text = str(item.get("text") or "").strip()
        if code is not None:
            code = str(code).strip().upper()
            if not ICD10.match(code):
                raise InvalidValue(
                    f"{code!r} is not an ICD-10 code (a letter, two digits, optionally a dot "
                    "and 1-4 letters or digits, e.g. E11.9)",
                    field=f"{field}.{n}.code",
                )
        if not text:
            raise InvalidValue("each diagnosis needs its text", field=f"{field}.{n}.text")
        out.append({"code": code, "text": text})
    return out


def contact_phone(number: str, field: str = "doctor_phone") -> str:
    """A contact number, trimmed; empty when none is given."""
    number = number.strip()
    digits = sum(c.isdigit() for c in number)
    if number and (not PHONE.match(number) or not 5 <= digits <= 20):
        raise InvalidValue(
            "a contact number is 5-20 digits with spaces, dashes, brackets or a leading +",
            field=field,
        )
    return number


def decision_due(
    requested_at: datetime, urgency: str, green_channel: bool, zone: tzinfo
) -> datetime:
    """When the hospital's decision on an upward referral is due (this deployment's service
    standard, docs/kpis.md): an emergency or green-channel referral the same day, an urgent one
    by the end of the next day, a routine one by the end of the third day after the request;
    days of ``zone``. The moment returned is the end of that day (the next day's start): a
    decision at or after it is late."""
    if urgency == Urgency.EMERGENCY or green_channel:
        days = 0
    elif urgency == Urgency.URGENT:
        days = 1
    else:
        days = 3
    day = requested_at.astimezone(zone).date() + timedelta(days=days + 1)
    return datetime.combine(day, time.min, zone)


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class ReferralStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    ARRIVED = "arrived"
    ADMITTED = "admitted"
    RETURNED = "returned"
    ACKNOWLEDGED = "acknowledged"


class RejectionReason(StrEnum):
    NO_CAPACITY = "no_capacity"
    NOT_INDICATED = "not_indicated"
    WRONG_DEPARTMENT = "wrong_department"
    INCOMPLETE_FORM = "incomplete_form"
    PATIENT_DECLINED = "patient_declined"
    OTHER = "other"


class ReferralAlreadyAccepted(DomainError):
    """An accepted referral cannot be rejected afterwards."""

    code = "referral-already-accepted"


class ReferralStepOutOfOrder(DomainError):
    """The step does not follow from the referral's current status."""

    code = "referral-step-out-of-order"


class NotAddressedToYou(NotPermitted):
    """Only the hospital a referral is addressed to may act on it."""

    code = "referral-not-addressed-to-you"


class ResentReferralNotFound(NotFound):
    """The referral a re-sent one names is not one of this patient's from this center."""

    code = "resent-referral-not-found"


class ReferralNotEnded(DomainError):
    """Only a rejected or cancelled referral is re-sent."""

    code = "referral-not-ended"


class NotTheSendingCenter(NotPermitted):
    """Only the sending community center (or its team) may take this step."""

    code = "not-the-sending-center"


#: The step that puts a referral in each status: what a later step is not dated before.
STEP_OF_STATUS = {
    "requested": "request",
    "accepted": "acceptance",
    "rejected": "rejection",
    "cancelled": "cancellation",
    "arrived": "arrival",
    "admitted": "admission",
    "returned": "return to community",
    "acknowledged": "acknowledgement",
}


class _ReferralOpened(Aggregate.Created):
    """What opens a referral's stream, up (``Referral.Requested``) or back to the community
    (``Referral.ReturnStarted``): the same fields, the same version-1 upcast (the form)."""

    class_version = 2

    patient_id: UUID
    contract_id: UUID | None
    team_id: UUID | None
    center_id: UUID
    hospital_id: UUID
    department: str
    direction: str
    reason: str
    diagnoses: list[dict[str, Any]]
    past_history: str
    treatment: str
    referring_doctor: str
    doctor_phone: str
    urgency: str
    green_channel: bool
    decision_due: datetime | None
    follow_up_due: date
    return_plan: dict[str, Any] | None
    actor: Actor
    at: datetime

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        upcast_form_v1_v2(state)


class Referral(Aggregate):
    """A referral up (上转) and its return to community (下转)."""

    class Requested(_ReferralOpened):
        """The two-way referral form up (转出单): the initial impression as coded
        ``diagnoses`` (初步印象), ``reason`` (主要现病史 and why the patient is referred),
        ``past_history`` (主要既往史), ``treatment`` so far (治疗经过), the referring doctor and
        a contact number; ``decision_due``: when the hospital's decision is due.

        ``resent_from``: the rejected or cancelled referral this one sends again (None for a
        first referral).

        Version 2 brought the form and ``resent_from``: version-1 events carry a free-text
        ``diagnosis`` and no ``resent_from``, and are upcast when read (see "How to change an
        event" in ARCHITECTURE.md)."""

        resent_from: UUID | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            upcast_form_v1_v2(state)
            state["resent_from"] = None

    class ReturnStarted(_ReferralOpened):
        """A hospital starts a return for a patient it treated without an upward referral;
        ``return_plan`` is the return form (回转单). Version 2: as ``Requested``."""

    @event("Requested")
    def __init__(
        self,
        id: UUID,
        patient_id: UUID,
        contract_id: UUID | None,
        team_id: UUID | None,
        center_id: UUID,
        hospital_id: UUID,
        department: str,
        direction: str,
        reason: str,
        diagnoses: list[dict[str, Any]],
        past_history: str,
        treatment: str,
        referring_doctor: str,
        doctor_phone: str,
        urgency: str,
        green_channel: bool,
        decision_due: datetime | None,
        follow_up_due: date,
        return_plan: dict[str, Any] | None,
        actor: Actor,
        at: datetime,
        resent_from: UUID | None = None,
    ) -> None:
        self.direction = direction
        #: The rejected or cancelled referral this one sends again.
        self.resent_from = resent_from
        self.patient_id = patient_id
        self.contract_id = contract_id
        self.team_id = team_id
        self.center_id = center_id
        self.hospital_id = hospital_id
        self.department = department
        self.reason = reason
        #: The transfer form (转出单): reason above, initial impression, history, treatment.
        self.diagnoses = diagnoses
        self.past_history = past_history
        self.treatment = treatment
        self.referring_doctor = referring_doctor
        self.doctor_phone = doctor_phone
        self.urgency = urgency
        self.green_channel = green_channel
        #: When the hospital's decision is due (None on a return, which no one decides).
        self.decision_due = decision_due
        #: Follow-up owed by the family doctor: 14 days after an upward referral, or the
        #: date a return to community sets.
        self.follow_up_due = follow_up_due
        self.requested_at = at
        self.decided_at: datetime | None = None
        self.return_plan = return_plan
        self.returned_at: datetime | None = at if direction == Direction.DOWN else None
        self.followed_up_on: date | None = None
        self.status = (
            ReferralStatus.RETURNED if direction == Direction.DOWN else ReferralStatus.REQUESTED
        )
        #: When the step that set ``status`` happened.
        self.status_at = at

    @classmethod
    def request(
        cls,
        id: UUID,
        *,
        patient_id: UUID,
        contract_id: UUID,
        team_id: UUID,
        center_id: UUID,
        hospital_id: UUID,
        department: str,
        reason: str,
        urgency: str,
        registered_poor: bool,
        actor: Actor,
        at: datetime,
        team_speaks_for_actor: bool,
        diagnosis: str = "",
        diagnoses: Sequence[Mapping[str, Any]] = (),
        past_history: str = "",
        treatment: str = "",
        referring_doctor: str = "",
        doctor_phone: str = "",
        zone: tzinfo | None = None,
        resends: Referral | None = None,
    ) -> Referral:
        """The patient's contracted team (or its center) fills the two-way referral form
        (转出单). ``diagnoses`` are the coded initial impression; ``diagnosis``, a free text as
        requests before the form carried it, is taken as one diagnosis without a code.

        ``resends``: the rejected or cancelled referral this one sends again (to another
        hospital, say); the follow-up after the referral is then still due two weeks from the
        first request (``follow_up_due`` carried on)."""
        if not team_speaks_for_actor:
            raise NotPermitted("only the patient's contracted team or its center may refer")
        if resends is not None:
            resends.ensure_resendable(patient_id=patient_id, center_id=center_id)
        if urgency not in set(Urgency):
            raise InvalidValue(f"unknown urgency {urgency!r}", field="urgency")
        if not reason.strip():
            raise InvalidValue("a referral needs a reason", field="reason")
        found = diagnoses_of(diagnoses)
        if diagnosis.strip():
            found.append({"code": None, "text": diagnosis.strip()})
        if not found:
            # a blank free-text diagnosis (the older form) is named as sent
            named = "diagnosis" if diagnosis else "diagnoses"
            raise InvalidValue("a referral needs at least one diagnosis", field=named)
        return cls(
            id=id,
            patient_id=patient_id,
            contract_id=contract_id,
            team_id=team_id,
            center_id=center_id,
            hospital_id=hospital_id,
            department=department,
            direction=Direction.UP,
            reason=reason.strip(),
            diagnoses=found,
            past_history=past_history.strip(),
            treatment=treatment.strip(),
            referring_doctor=referring_doctor.strip(),
            doctor_phone=contact_phone(doctor_phone),
            urgency=urgency,
            green_channel=registered_poor,
            decision_due=decision_due(at, urgency, registered_poor, zone or _zone_of(at)),
            # carried on from the ended referral, unless its follow-up was already done
            follow_up_due=(
                resends.follow_up_due
                if resends is not None and resends.followed_up_on is None
                else at.date() + FOLLOW_UP_AFTER_REFERRAL
            ),
            return_plan=None,
            actor=actor,
            at=at,
            resent_from=None if resends is None else resends.id,
        )

    def ensure_resendable(self, *, patient_id: UUID, center_id: UUID) -> None:
        """A referral is sent again only by its own center, for its own patient, once it was
        rejected or cancelled (that it is sent again once only is the follow-ups' rule:
        :meth:`domain.followups.FollowUps.carry_on`)."""
        if (
            self.direction != Direction.UP
            or self.patient_id != patient_id
            or self.center_id != center_id
        ):
            raise ResentReferralNotFound("no such referral of this patient from this center")
        if self.status not in (ReferralStatus.REJECTED, ReferralStatus.CANCELLED):
            raise ReferralNotEnded(
                f"referral is {self.status}; only a rejected or cancelled one is sent again",
                status=str(self.status),
            )

    @classmethod
    def start_return(
        cls,
        id: UUID,
        *,
        patient_id: UUID,
        center_id: UUID,
        hospital_id: UUID,
        department: str,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        at: datetime,
        diagnoses: Sequence[Mapping[str, Any]] = (),
        inpatient_number: str = "",
        key_results: str = "",
        next_plan: str = "",
    ) -> Referral:
        """A hospital returns a patient it treated without an upward referral (回转单)."""
        if actor.org_id != hospital_id:
            raise NotPermitted("a hospital starts returns only for its own patients")
        _check_return(summary, prescriptions, follow_up_due, at)
        form = _return_form(diagnoses, inpatient_number, key_results, next_plan)
        return cls._create(
            cls.ReturnStarted,
            id=id,
            patient_id=patient_id,
            contract_id=None,
            team_id=None,
            center_id=center_id,
            hospital_id=hospital_id,
            department=department,
            direction=Direction.DOWN,
            reason="",
            diagnoses=[],
            past_history="",
            treatment="",
            referring_doctor="",
            doctor_phone="",
            urgency=Urgency.ROUTINE,
            green_channel=False,
            decision_due=None,
            follow_up_due=follow_up_due,
            return_plan={
                "summary": summary,
                "prescriptions": prescriptions,
                "rehabilitation": rehabilitation,
                **form,
            },
            actor=actor,
            at=at,
        )

    # --- the hospital decides -------------------------------------------------------------

    def accept(self, actor: Actor, at: datetime, note: str = "") -> None:
        self._ensure_hospital(actor)
        if self.status == ReferralStatus.ACCEPTED:
            raise ReferralStepOutOfOrder("the referral is already accepted")
        self._ensure_status(ReferralStatus.REQUESTED)
        self._ensure_after_status("acceptance", at)
        self._accepted(note=note, actor=actor, at=at)

    @event("Accepted")
    def _accepted(self, note: str, actor: Actor, at: datetime) -> None:
        self.status = ReferralStatus.ACCEPTED
        self.status_at = at
        self.decided_at = at

    def reject(self, reason_code: str, note: str, actor: Actor, at: datetime) -> None:
        self._ensure_hospital(actor)
        if self.status in (
            ReferralStatus.ACCEPTED,
            ReferralStatus.ARRIVED,
            ReferralStatus.ADMITTED,
            ReferralStatus.RETURNED,
            ReferralStatus.ACKNOWLEDGED,
        ):
            raise ReferralAlreadyAccepted("an accepted referral cannot be rejected")
        self._ensure_status(ReferralStatus.REQUESTED)
        if reason_code not in set(RejectionReason):
            raise InvalidValue(f"unknown rejection reason {reason_code!r}", field="reason_code")
        self._ensure_after_status("rejection", at)
        self._rejected(reason_code=reason_code, note=note, actor=actor, at=at)

    @event("Rejected")
    def _rejected(self, reason_code: str, note: str, actor: Actor, at: datetime) -> None:
        self.status = ReferralStatus.REJECTED
        self.status_at = at
        self.decided_at = at

    # --- the sending center may cancel before arrival ---------------------------------------

    def cancel(self, reason: str, actor: Actor, at: datetime, team_speaks_for_actor: bool) -> None:
        if actor.org_id != self.center_id and not team_speaks_for_actor:
            raise NotTheSendingCenter("only the sending center may cancel a referral")
        self._ensure_status(ReferralStatus.REQUESTED, ReferralStatus.ACCEPTED)
        self._ensure_after_status("cancellation", at)
        self._cancelled(reason=reason, actor=actor, at=at)

    @event("Cancelled")
    def _cancelled(self, reason: str, actor: Actor, at: datetime) -> None:
        self.status = ReferralStatus.CANCELLED
        self.status_at = at

    # --- at the hospital --------------------------------------------------------------------

    def arrive(self, actor: Actor, at: datetime) -> None:
        self._ensure_hospital(actor)
        self._ensure_status(ReferralStatus.ACCEPTED)
        self._ensure_after_status("arrival", at)
        self._arrived(actor=actor, at=at)

    @event("PatientArrived")
    def _arrived(self, actor: Actor, at: datetime) -> None:
        self.status = ReferralStatus.ARRIVED
        self.status_at = at

    def admit(self, ward: str, actor: Actor, at: datetime) -> None:
        self._ensure_hospital(actor)
        self._ensure_status(ReferralStatus.ARRIVED)
        self._ensure_after_status("admission", at)
        self._admitted(ward=ward, actor=actor, at=at)

    @event("PatientAdmitted")
    def _admitted(self, ward: str, actor: Actor, at: datetime) -> None:
        self.status = ReferralStatus.ADMITTED
        self.status_at = at

    def return_to_community(
        self,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        at: datetime,
        diagnoses: Sequence[Mapping[str, Any]] = (),
        inpatient_number: str = "",
        key_results: str = "",
        next_plan: str = "",
    ) -> None:
        """Discharge with a return to community (下转) and its form (回转单): diagnoses, the
        inpatient record number, key results, the summary of treatment, continued
        prescriptions, the next plan and rehabilitation advice."""
        self._ensure_hospital(actor)
        self._ensure_status(ReferralStatus.ARRIVED, ReferralStatus.ADMITTED)
        self._ensure_after_status("return to community", at)
        _check_return(summary, prescriptions, follow_up_due, at)
        form = _return_form(diagnoses, inpatient_number, key_results, next_plan)
        self._returned(
            summary=summary,
            prescriptions=prescriptions,
            rehabilitation=rehabilitation,
            follow_up_due=follow_up_due,
            actor=actor,
            at=at,
            **form,
        )

    class ReturnedToCommunity(Aggregate.Event):
        """The return form (回转单). Version 2 added ``diagnoses`` (诊断结果),
        ``inpatient_number`` (住院病案号), ``key_results`` (主要检查结果) and ``next_plan``
        (下一步治疗方案); version-1 events read them empty."""

        class_version = 2

        summary: str
        prescriptions: list[dict[str, Any]]
        rehabilitation: str
        follow_up_due: date
        actor: Actor
        at: datetime
        diagnoses: list[dict[str, Any]]
        inpatient_number: str
        key_results: str
        next_plan: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("diagnoses", [])
            for name in RETURN_FORM_FIELDS[1:]:
                state.setdefault(name, "")

    @event(ReturnedToCommunity)
    def _returned(
        self,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        at: datetime,
        diagnoses: list[dict[str, Any]],
        inpatient_number: str,
        key_results: str,
        next_plan: str,
    ) -> None:
        self.status = ReferralStatus.RETURNED
        self.status_at = at
        self.return_plan = {
            "summary": summary,
            "prescriptions": prescriptions,
            "rehabilitation": rehabilitation,
            "diagnoses": diagnoses,
            "inpatient_number": inpatient_number,
            "key_results": key_results,
            "next_plan": next_plan,
        }
        self.returned_at = at
        self.follow_up_due = follow_up_due
        # The return opens a loop of its own: its follow-up is still to come.
        self.followed_up_on = None

    # --- back in the community ----------------------------------------------------------------

    def acknowledge_return(self, actor: Actor, at: datetime, team_speaks_for_actor: bool) -> None:
        if actor.org_id != self.center_id and not team_speaks_for_actor:
            raise NotTheSendingCenter("only the patient's community center acknowledges a return")
        self._ensure_status(ReferralStatus.RETURNED)
        self._ensure_after_status("acknowledgement", at)
        self._acknowledged(actor=actor, at=at)

    @event("ReturnAcknowledged")
    def _acknowledged(self, actor: Actor, at: datetime) -> None:
        self.status = ReferralStatus.ACKNOWLEDGED
        self.status_at = at

    def record_follow_up(
        self,
        visit_id: UUID,
        on: date,
        actor: Actor,
        at: datetime,
        patient_center_id: UUID | None = None,
    ) -> None:
        """The family doctor's follow-up that closes this referral's loop (after the referral,
        and again after the return to community). Recorded by the sending center, or by the
        center now caring for the patient (``patient_center_id``) after a team change."""
        if actor.org_id not in (self.center_id, patient_center_id):
            raise NotTheSendingCenter("follow-ups are recorded by the patient's center")
        if self.followed_up_on is None:
            self._followed_up(visit_id=visit_id, on=on, actor=actor, at=at)

    @event("FollowedUp")
    def _followed_up(self, visit_id: UUID, on: date, actor: Actor, at: datetime) -> None:
        self.followed_up_on = on

    # --- guards ---------------------------------------------------------------------------

    def _ensure_hospital(self, actor: Actor) -> None:
        if actor.org_id != self.hospital_id:
            raise NotAddressedToYou("the referral is addressed to another hospital")

    def _ensure_after_status(self, step: str, at: datetime) -> None:
        """A step is not dated before the step that put the referral in its status."""
        ensure_not_before(at, self.status_at, step, STEP_OF_STATUS[self.status])

    def _ensure_status(self, *allowed: ReferralStatus) -> None:
        if self.status not in allowed:
            raise ReferralStepOutOfOrder(
                f"referral is {self.status}; this step needs "
                + " or ".join(str(s) for s in allowed),
                status=str(self.status),
            )


def _check_return(
    summary: str, prescriptions: list[dict[str, Any]], follow_up_due: date, at: datetime
) -> None:
    if not summary.strip():
        raise InvalidValue("a return to community needs a discharge summary", field="summary")
    if follow_up_due < at.date():
        raise InvalidValue("the follow-up due date is before the discharge", field="follow_up_due")
    for item in prescriptions:
        if not isinstance(item, dict) or not str(item.get("drug", "")).strip():
            raise InvalidValue("each continued prescription names a drug", field="prescriptions")


def _return_form(
    diagnoses: Sequence[Mapping[str, Any]], inpatient_number: str, key_results: str, next_plan: str
) -> dict[str, Any]:
    return {
        "diagnoses": diagnoses_of(diagnoses),
        "inpatient_number": inpatient_number.strip(),
        "key_results": key_results.strip(),
        "next_plan": next_plan.strip(),
    }


def _zone_of(at: datetime) -> tzinfo:
    if at.tzinfo is None:
        raise InvalidValue("a moment must carry a timezone", field="at")
    return at.tzinfo


def upcast_form_v1_v2(state: dict[str, Any]) -> None:
    """A referral opened before the form (version 1) in the form's shape: its free-text
    ``diagnosis`` as one diagnosis without a code, the form's other fields empty, and the
    decision deadline the service standard gives it (an upward referral)."""
    text = state.pop("diagnosis", "") or ""
    state["diagnoses"] = [{"code": None, "text": text}] if text else []
    for name in ("past_history", "treatment", "referring_doctor", "doctor_phone"):
        state.setdefault(name, "")
    at = state["at"]
    up = state.get("direction") == Direction.UP
    state["decision_due"] = (
        decision_due(at, state["urgency"], bool(state["green_channel"]), _zone_of(at))
        if up
        else None
    )
    plan = state.get("return_plan")
    if isinstance(plan, dict):
        plan.setdefault("diagnoses", [])
        for name in RETURN_FORM_FIELDS[1:]:
            plan.setdefault(name, "")

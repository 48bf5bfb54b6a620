"""Fulfilment (履约): follow-up obligations a contract owes a patient, and recorded visits."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.common import (
    Actor,
    DomainError,
    InvalidValue,
    NotPermitted,
    add_years,
    ensure_not_before,
    stable_id,
)
from domain.patients import Tag


class VisitKind(StrEnum):
    FACE_TO_FACE = "face_to_face"
    PHONE = "phone"
    HOME_VISIT = "home_visit"


class RiskLevel(StrEnum):
    """Risk assessment levels 0-5 of the severe-mental-disorder management standard."""

    L0 = "0"
    L1 = "1"
    L2 = "2"
    L3 = "3"
    L4 = "4"
    L5 = "5"


class ObligationReason(StrEnum):
    TYPE2_DIABETES = "type2_diabetes"
    SEVERE_MENTAL_DISORDER = "severe_mental_disorder"
    CHRONIC_DISEASE = "chronic_disease"
    AFTER_REFERRAL = "after_referral"
    RETURN_TO_COMMUNITY = "return_to_community"


#: The obligations a referral's loop owes (after the referral, after its return).
LOOP_REASONS = frozenset({ObligationReason.AFTER_REFERRAL, ObligationReason.RETURN_TO_COMMUNITY})


def overdue(status: str, due: date, today: date) -> bool:
    """The one definition of "overdue": an obligation is overdue on ``today`` (a calendar
    day of the deployment's zone) when it is still open and its due date is before that day.
    Workloads, worklists, KPIs and pages count by its SQL form
    (:func:`projections.obligations.overdue`), which the tests hold to this one."""
    return status == "open" and due < today


def late(status: str, due: date, done_on: date | None) -> bool:
    """A fulfilled obligation was late when the visit that met it happened after its due
    date (the visit's own day, however much later it was written up)."""
    return status == "done" and done_on is not None and done_on > due


def on_time(status: str, due: date, done_on: date | None) -> bool:
    """A fulfilled obligation met by a visit on or before its due date."""
    return status == "done" and done_on is not None and done_on <= due


FACE_TO_FACE_KINDS = frozenset({VisitKind.FACE_TO_FACE, VisitKind.HOME_VISIT})
VISIT_KINDS = frozenset(VisitKind)
RISK_LEVELS = frozenset(RiskLevel)
MEASUREMENTS = {
    "systolic_bp": (50, 300),
    "diastolic_bp": (30, 200),
    "fasting_glucose": (1.0, 40.0),
    "weight_kg": (1.0, 400.0),
    "heart_rate": (20, 250),
}


@dataclass(frozen=True)
class Obligation:
    """One follow-up owed: due by ``due``, counted from ``window_start``."""

    id: UUID
    reason: str
    window_start: date
    due: date
    face_to_face: bool
    risk_assessment: bool
    source_id: UUID
    #: The ended referral whose follow-up this one carries on (a re-sent referral's).
    carried_from: UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": self.id,
            "reason": self.reason,
            "window_start": self.window_start,
            "due": self.due,
            "face_to_face": self.face_to_face,
            "risk_assessment": self.risk_assessment,
            "source_id": self.source_id,
        }
        if self.carried_from is not None:
            # only when set: obligations stored before re-sending existed lack the key
            found["carried_from"] = self.carried_from
        return found


def _quarterly(
    reason: str, source_id: UUID, start: date, end: date, face_to_face: bool, risk: bool
) -> list[Obligation]:
    out: list[Obligation] = []
    year_start = start
    while year_start <= end:
        for q in range(4):
            window_start = year_start + timedelta(days=(365 * q) // 4)
            due = min(year_start + timedelta(days=(365 * (q + 1)) // 4 - 1), end)
            if window_start > end:
                break
            out.append(
                Obligation(
                    stable_id(source_id, reason, window_start),
                    reason,
                    window_start,
                    due,
                    face_to_face,
                    risk,
                    source_id,
                )
            )
        year_start = add_years(year_start, 1)
    return out


def _yearly(reason: str, source_id: UUID, start: date, end: date) -> list[Obligation]:
    out: list[Obligation] = []
    year_start = start
    while year_start <= end:
        due = min(add_years(year_start, 1) - timedelta(days=1), end)
        out.append(
            Obligation(
                stable_id(source_id, reason, year_start),
                reason,
                year_start,
                due,
                True,
                False,
                source_id,
            )
        )
        year_start = add_years(year_start, 1)
    return out


def contract_obligations(
    contract_id: UUID, tags: set[str], start: date, end: date
) -> list[Obligation]:
    """What a contract term owes, from the patient's tags.

    Type-2 diabetes: 4 face-to-face a year. Severe mental disorder: 4 a year, each with a risk
    assessment. Other chronic disease (hypertension, tuberculosis): 1 face-to-face a year.
    """
    found: list[Obligation] = []
    if Tag.TYPE2_DIABETES in tags:
        found += _quarterly(ObligationReason.TYPE2_DIABETES, contract_id, start, end, True, False)
    if Tag.SEVERE_MENTAL_DISORDER in tags:
        found += _quarterly(
            ObligationReason.SEVERE_MENTAL_DISORDER, contract_id, start, end, False, True
        )
    if tags & {Tag.HYPERTENSION, Tag.TUBERCULOSIS} and Tag.TYPE2_DIABETES not in tags:
        found += _yearly(ObligationReason.CHRONIC_DISEASE, contract_id, start, end)
    return found


def single_obligation(reason: str, source_id: UUID, opened: date, due: date) -> Obligation:
    """A one-off follow-up: after an upward referral, or the one a return to community sets."""
    return Obligation(stable_id(source_id, reason), reason, opened, due, False, False, source_id)


class RiskAssessmentRequired(DomainError):
    """Every severe-mental-disorder follow-up carries a risk assessment."""

    code = "risk-assessment-required"


class FaceToFaceRequired(DomainError):
    """This obligation is met only by a face-to-face visit (or a home visit)."""

    code = "face-to-face-required"


class ObligationNotOpen(DomainError):
    """The obligation named is already fulfilled or withdrawn."""

    code = "obligation-not-open"


class ReferralAlreadyResent(DomainError):
    """A rejected or cancelled referral is sent again once: its follow-up is carried on by
    one referral only."""

    code = "referral-already-resent"


class FollowUps(Aggregate):
    """A patient's follow-up obligations and visits (one stream per patient)."""

    @event("Opened")
    def __init__(
        self,
        id: UUID,
        patient_id: UUID,
        center_id: UUID,
        actor: Actor | None = None,
        at: datetime | None = None,
    ) -> None:
        # ``actor`` and ``at`` are optional only so that early Opened events still load.
        self.patient_id = patient_id
        self.center_id = center_id
        self.obligations: dict[UUID, dict[str, Any]] = {}
        self.visits: dict[UUID, dict[str, Any]] = {}

    @staticmethod
    @functools.lru_cache(maxsize=65_536)
    def id_for(patient_id: UUID) -> UUID:
        return stable_id("followups", patient_id)

    @classmethod
    def open(
        cls,
        patient_id: UUID,
        center_id: UUID,
        actor: Actor | None = None,
        at: datetime | None = None,
    ) -> FollowUps:
        """The patient's follow-up stream, opened by whoever first gives it an obligation."""
        return cls(
            id=cls.id_for(patient_id),
            patient_id=patient_id,
            center_id=center_id,
            actor=actor,
            at=at,
        )

    def transfer(self, center_id: UUID, actor: Actor, at: datetime) -> None:
        """Follow-ups move with the patient's contract to another community center."""
        if center_id != self.center_id:
            open_ids = [o["id"] for o in self.open_obligations()]
            self._transferred(center_id=center_id, obligation_ids=open_ids, actor=actor, at=at)

    @event("Transferred")
    def _transferred(
        self, center_id: UUID, obligation_ids: list[UUID], actor: Actor, at: datetime
    ) -> None:
        """The stream and its open obligations (``obligation_ids``) now belong to the center."""
        self.center_id = center_id

    def schedule(self, obligations: list[Obligation], actor: Actor, at: datetime) -> None:
        """Add obligations; ones already scheduled (same id) are left as they are."""
        new = [o.as_dict() for o in obligations if o.id not in self.obligations]
        if new:
            self._scheduled(obligations=new, actor=actor, at=at)

    @event("Scheduled")
    def _scheduled(self, obligations: list[dict[str, Any]], actor: Actor, at: datetime) -> None:
        for o in obligations:
            self.obligations[o["id"]] = {**o, "status": "open", "visit_id": None}

    def withdraw(
        self, source_id: UUID, after: date, reason: str, actor: Actor, at: datetime
    ) -> None:
        """Withdraw open obligations of a source (a contract ended) whose window starts later."""
        ids = [
            k
            for k, o in self.obligations.items()
            if o["source_id"] == source_id and o["status"] == "open" and o["window_start"] > after
        ]
        if ids:
            self._withdrawn(obligation_ids=ids, reason=reason, actor=actor, at=at)

    @event("Withdrawn")
    def _withdrawn(
        self, obligation_ids: list[UUID], reason: str, actor: Actor, at: datetime
    ) -> None:
        for k in obligation_ids:
            self.obligations[k]["status"] = "withdrawn"

    def end_loop(self, source_id: UUID, reason: str, actor: Actor, at: datetime) -> None:
        """A referral rejected or cancelled: the follow-ups its loop still owes end with it
        (withdrawn with ``reason``); a re-sent referral carries them on (:meth:`carry_on`)."""
        ids = [
            k
            for k, o in self.obligations.items()
            if o["source_id"] == source_id and o["status"] == "open"
        ]
        if ids:
            self._withdrawn(obligation_ids=ids, reason=reason, actor=actor, at=at)

    def carry_on(
        self, ended: UUID, referral_id: UUID, opened: date, due: date, actor: Actor, at: datetime
    ) -> Obligation:
        """The follow-up after a referral sent again (``referral_id``) in place of an ended
        one (``ended``): it keeps the window start and due date the ended referral's had (the
        two weeks count from when the patient was first referred), unless that follow-up was
        already done: then the new referral owes one of its own, from ``opened`` to ``due``.
        An ended referral is carried on once (:class:`ReferralAlreadyResent`)."""
        if any(o.get("carried_from") == ended for o in self.obligations.values()):
            raise ReferralAlreadyResent("that referral was already sent again")
        before = self.obligations.get(stable_id(ended, ObligationReason.AFTER_REFERRAL))
        if before is not None and before["status"] != "done":
            opened = before["window_start"]
        self.end_loop(ended, "referral re-sent", actor, at)
        carried = Obligation(
            stable_id(referral_id, ObligationReason.AFTER_REFERRAL),
            ObligationReason.AFTER_REFERRAL,
            opened,
            due,
            False,
            False,
            referral_id,
            carried_from=ended,
        )
        self.schedule([carried], actor, at)
        return carried

    def open_obligations(self) -> list[dict[str, Any]]:
        return sorted(
            (o for o in self.obligations.values() if o["status"] == "open"),
            key=lambda o: (o["due"], str(o["id"])),
        )

    def record_visit(
        self,
        visit_id: UUID,
        on: date,
        kind: str,
        measurements: dict[str, float],
        risk_level: str | None,
        note: str,
        actor: Actor,
        at: datetime,
        obligation_id: UUID | None = None,
    ) -> list[UUID]:
        """Record a visit; it fulfils the obligations of the loop it belongs to.

        Which: the obligation named (``obligation_id``); else, among the open obligations
        whose window has started and that the visit can meet, a referral loop's (after the
        referral, after its return: earliest due first), else a contract's (earliest due
        first). A visit meeting a loop's obligation meets every open obligation of that same
        loop whose window has started and that it can meet (one visit is the family doctor's
        follow-up of the loop: after a return it also closes the follow-up after the
        referral). Returns the fulfilled obligations' ids, the chosen one first.
        """
        if actor.org_id != self.center_id:
            raise NotPermitted("follow-ups are recorded by the patient's community center")
        if kind not in VISIT_KINDS:
            raise InvalidValue(f"unknown visit kind {kind!r}", field="kind")
        if risk_level is not None and risk_level not in RISK_LEVELS:
            raise InvalidValue("risk level is 0 to 5", field="risk_level")
        if on > at.date():
            raise InvalidValue("a visit cannot be recorded before it happens", field="on")
        if visit_id in self.visits:
            raise InvalidValue("visit id already used", field="visit_id")
        for name, value in measurements.items():
            low, high = MEASUREMENTS.get(name, (None, None))
            if low is None or high is None:
                raise InvalidValue(f"unknown measurement {name!r}", field="measurements")
            if not low <= value <= high:
                raise InvalidValue(f"{name} {value} outside {low}-{high}", field="measurements")
        fulfilled = self._choose(on, kind, risk_level, obligation_id)
        self._visited(
            visit_id=visit_id,
            visited_on=on,
            kind=kind,
            measurements=measurements,
            risk_level=risk_level,
            note=note,
            obligation_ids=fulfilled,
            actor=actor,
            at=at,
        )
        return fulfilled

    def _choose(
        self, on: date, kind: str, risk_level: str | None, obligation_id: UUID | None
    ) -> list[UUID]:
        chosen: dict[str, Any] | None = None
        if obligation_id is not None:
            chosen = self.obligations.get(obligation_id)
            if chosen is None or chosen["status"] != "open":
                raise ObligationNotOpen("that follow-up obligation is not open")
            self._ensure_meets(chosen, kind, risk_level)
            ensure_not_before(
                on, chosen["window_start"], "visit", "start of the follow-up it meets"
            )
        else:
            can = [
                o
                for o in self.open_obligations()
                if o["window_start"] <= on and self._meets(o, kind, risk_level)
            ]
            loops = [o for o in can if o["reason"] in LOOP_REASONS]
            chosen = loops[0] if loops else can[0] if can else None
        if chosen is None:
            return []
        found = [chosen["id"]]
        if chosen["reason"] in LOOP_REASONS:
            found += [
                o["id"]
                for o in self.open_obligations()
                if o["id"] != chosen["id"]
                and o["source_id"] == chosen["source_id"]
                and o["reason"] in LOOP_REASONS
                and o["window_start"] <= on
                and self._meets(o, kind, risk_level)
            ]
        return found

    def open_of(self, source_id: UUID) -> list[dict[str, Any]]:
        """The open obligations of one source (a contract, a referral's loop)."""
        return [o for o in self.open_obligations() if o["source_id"] == source_id]

    @staticmethod
    def _meets(o: dict[str, Any], kind: str, risk_level: str | None) -> bool:
        return (not o["face_to_face"] or kind in FACE_TO_FACE_KINDS) and (
            not o["risk_assessment"] or risk_level is not None
        )

    @staticmethod
    def _ensure_meets(o: dict[str, Any], kind: str, risk_level: str | None) -> None:
        if o["face_to_face"] and kind not in FACE_TO_FACE_KINDS:
            raise FaceToFaceRequired("this follow-up must be face-to-face or a home visit")
        if o["risk_assessment"] and risk_level is None:
            raise RiskAssessmentRequired("a severe-mental-disorder follow-up needs a risk level")

    class VisitRecorded(Aggregate.Event):
        """A visit happened on ``visited_on`` (``at`` is the moment it was recorded as
        happening; they differ when a visit is written up later).

        Version 2 renamed ``on`` to ``visited_on``; version 3 replaced ``obligation_id`` (one
        or none) by ``obligation_ids`` (every obligation the visit fulfilled: a loop's two
        follow-ups at once). Events stored by older versions are upcast when read (see "How
        to change an event" in ARCHITECTURE.md)."""

        class_version = 3

        visit_id: UUID
        visited_on: date
        kind: str
        measurements: dict[str, float]
        risk_level: str | None
        note: str
        obligation_ids: list[UUID]
        actor: Actor
        at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["visited_on"] = state.pop("on")

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            one = state.pop("obligation_id", None)
            state["obligation_ids"] = [] if one is None else [one]

    @event(VisitRecorded)
    def _visited(
        self,
        visit_id: UUID,
        visited_on: date,
        kind: str,
        measurements: dict[str, float],
        risk_level: str | None,
        note: str,
        obligation_ids: list[UUID],
        actor: Actor,
        at: datetime,
    ) -> None:
        self.visits[visit_id] = {
            "on": visited_on,
            "kind": kind,
            "obligation_ids": list(obligation_ids),
        }
        for obligation_id in obligation_ids:
            self.obligations[obligation_id]["status"] = "done"
            self.obligations[obligation_id]["visit_id"] = visit_id

"""Expert slots and reserved beds (专家号 / 预留床位) set aside for family doctors."""

from __future__ import annotations

from datetime import date, datetime
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


class QuotaKind(StrEnum):
    EXPERT = "expert"
    BED = "bed"


class HalfDay(StrEnum):
    AM = "am"
    PM = "pm"


class QuotaFull(DomainError):
    """Never more bookings than slots."""

    code = "quota-full"


class AlreadyBooked(DomainError):
    """One booking per patient per session."""

    code = "patient-already-booked"


class QuotaReleased(DomainError):
    """After the release cutoff, unbooked slots belong to the hospital again."""

    code = "quota-released"


class SessionStarted(DomainError):
    """Bookings are made and cancelled before the session starts."""

    code = "session-started"


class SessionNotYetHeld(DomainError):
    """Attendance is recorded on or after the session day."""

    code = "session-not-yet-held"


class NotReservedForYou(NotPermitted):
    """The quota is reserved for another community center or district."""

    code = "quota-not-reserved-for-you"


class UnknownBooking(NotFound):
    """The quota has no such booking."""

    code = "unknown-booking"


class AttendanceAlreadyRecorded(DomainError):
    """Attendance or no-show is recorded once per booking."""

    code = "attendance-already-recorded"


class Quota(Aggregate):
    """Slots a hospital publishes for one session (experts) or one ward and period (beds)."""

    @event("Published")
    def __init__(
        self,
        id: UUID,
        hospital_id: UUID,
        kind: str,
        department: str,
        expert: str | None,
        ward: str | None,
        session_date: date,
        half_day: str | None,
        end_date: date,
        slots: int,
        reserved_for_center: UUID | None,
        reserved_for_district: str | None,
        release_at: datetime,
        actor: Actor,
        at: datetime,
    ) -> None:
        self.hospital_id = hospital_id
        self.kind = kind
        self.department = department
        self.expert = expert
        self.ward = ward
        self.session_date = session_date
        self.half_day = half_day
        self.end_date = end_date
        self.slots = slots
        self.reserved_for_center = reserved_for_center
        self.reserved_for_district = reserved_for_district
        self.release_at = release_at
        self.released = False
        self.bookings: dict[UUID, dict[str, Any]] = {}
        #: When the quota was published: bookings and its release come after.
        self.published_at = at

    @classmethod
    def publish(
        cls,
        id: UUID,
        *,
        hospital_id: UUID,
        kind: str,
        department: str,
        session_date: date,
        slots: int,
        release_at: datetime,
        actor: Actor,
        at: datetime,
        expert: str | None = None,
        ward: str | None = None,
        half_day: str | None = None,
        end_date: date | None = None,
        reserved_for_center: UUID | None = None,
        reserved_for_district: str | None = None,
    ) -> Quota:
        if actor.org_id != hospital_id:
            raise NotPermitted("a hospital publishes only its own quotas")
        if kind not in set(QuotaKind):
            raise InvalidValue(f"unknown quota kind {kind!r}", field="kind")
        if slots < 1:
            raise InvalidValue("a quota has at least one slot", field="slots")
        if (reserved_for_center is None) == (reserved_for_district is None):
            raise InvalidValue(
                "a quota is reserved for one community center (reserved_for_center) or one "
                "district (reserved_for_district)",
                field="reserved_for_center",
            )
        if kind == QuotaKind.EXPERT:
            if half_day not in set(HalfDay):
                raise InvalidValue("an expert session is 'am' or 'pm'", field="half_day")
            end_date = session_date
        else:
            if not ward:
                raise InvalidValue("reserved beds name a ward", field="ward")
            end_date = end_date or session_date
            if end_date < session_date:
                raise InvalidValue("beds end before they start", field="end_date")
        if release_at.date() > session_date:
            raise InvalidValue("the release cutoff is after the session", field="release_at")
        return cls(
            id=id,
            hospital_id=hospital_id,
            kind=kind,
            department=department,
            expert=expert,
            ward=ward,
            session_date=session_date,
            half_day=half_day,
            end_date=end_date,
            slots=slots,
            reserved_for_center=reserved_for_center,
            reserved_for_district=reserved_for_district,
            release_at=release_at,
            actor=actor,
            at=at,
        )

    @property
    def active_bookings(self) -> dict[UUID, dict[str, Any]]:
        return {k: b for k, b in self.bookings.items() if not b["cancelled"]}

    @property
    def slots_left(self) -> int:
        return 0 if self.released else self.slots - len(self.active_bookings)

    def book(
        self,
        booking_id: UUID,
        *,
        patient_id: UUID,
        referral_id: UUID | None,
        actor: Actor,
        actor_district: str,
        at: datetime,
        team_id: UUID | None = None,
        booker_is_center: bool = True,
        recorded: datetime | None = None,
        patient_centers: frozenset[UUID] = frozenset(),
    ) -> None:
        """A family-doctor team books a slot for a patient, ideally tied to a referral.

        ``booker_is_center`` says whether the acting organisation is a community center:
        a hospital in a reserved district does not book its own family-doctor quota.
        The cutoff is checked against when the booking is recorded (``recorded``) as well as
        when it is said to have happened: a back-dated entry cannot take a released slot.
        ``patient_centers`` are the centers caring for the patient (registry and contract):
        a center books only for its own patients.
        """
        if not booker_is_center:
            raise NotReservedForYou("quotas are booked by community centers' teams")
        if patient_centers and actor.org_id not in patient_centers:
            raise NotPermitted("a center books slots for its own patients")
        if self.reserved_for_center is not None and actor.org_id != self.reserved_for_center:
            raise NotReservedForYou("the quota is reserved for another community center")
        if self.reserved_for_district is not None and actor_district != self.reserved_for_district:
            raise NotReservedForYou("the quota is reserved for another district")
        if self.released or max(at, recorded or at) >= self.release_at:
            raise QuotaReleased("unbooked slots have gone back to the hospital")
        ensure_not_before(at, self.published_at, "booking", "quota's publication")
        if any(b["patient_id"] == patient_id for b in self.active_bookings.values()):
            raise AlreadyBooked("the patient already has a booking in this session")
        if booking_id in self.bookings:
            raise InvalidValue("booking id already used", field="booking_id")
        if len(self.active_bookings) >= self.slots:
            raise QuotaFull(f"all {self.slots} slots are booked")
        self._booked(
            booking_id=booking_id,
            patient_id=patient_id,
            referral_id=referral_id,
            team_id=team_id,
            actor=actor,
            at=at,
        )

    @event("Booked")
    def _booked(
        self,
        booking_id: UUID,
        patient_id: UUID,
        referral_id: UUID | None,
        team_id: UUID | None,
        actor: Actor,
        at: datetime,
    ) -> None:
        self.bookings[booking_id] = {
            "patient_id": patient_id,
            "referral_id": referral_id,
            "team_id": team_id,
            "center_id": actor.org_id,
            "cancelled": False,
            "attended": None,
            "booked_at": at,
        }

    def cancel_booking(
        self,
        booking_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime,
        recorded: datetime | None = None,
    ) -> None:
        """Cancelling before the session day (as recorded, not only as claimed) frees the slot."""
        booking = self._booking(booking_id)
        if actor.org_id != booking["center_id"]:
            raise NotPermitted("only the booking center may cancel a booking")
        if booking["cancelled"]:
            raise InvalidValue("the booking is already cancelled", field="booking_id")
        if max(at, recorded or at).date() >= self.session_date:
            raise SessionStarted("a booking is cancelled before the session day")
        ensure_not_before(at, booking["booked_at"], "cancellation", "booking")
        self._booking_cancelled(booking_id=booking_id, reason=reason, actor=actor, at=at)

    @event("BookingCancelled")
    def _booking_cancelled(self, booking_id: UUID, reason: str, actor: Actor, at: datetime) -> None:
        self.bookings[booking_id]["cancelled"] = True

    def release(self, actor: Actor, at: datetime) -> int:
        """At the cutoff, unbooked slots go back to the hospital; returns how many."""
        if actor.org_id != self.hospital_id:
            raise NotPermitted("unbooked slots are released by the publishing hospital")
        if self.released:
            return 0
        if at < self.release_at:
            raise InvalidValue("the release cutoff has not been reached", field="at")
        ensure_not_before(at, self.published_at, "release", "quota's publication")
        count = self.slots - len(self.active_bookings)
        self._released(unbooked=count, actor=actor, at=at)
        return count

    @event("Released")
    def _released(self, unbooked: int, actor: Actor, at: datetime) -> None:
        self.released = True

    def record_attendance(
        self, booking_id: UUID, attended: bool, actor: Actor, at: datetime
    ) -> None:
        """The hospital records attendance or a no-show, on or after the session day."""
        if actor.org_id != self.hospital_id:
            raise NotPermitted("attendance is recorded by the hospital")
        booking = self._booking(booking_id)
        if booking["cancelled"]:
            raise InvalidValue("the booking was cancelled", field="booking_id")
        if booking["attended"] is not None:
            raise AttendanceAlreadyRecorded("attendance for this booking is already recorded")
        if at.date() < self.session_date:
            raise SessionNotYetHeld("attendance is recorded on or after the session day")
        ensure_not_before(
            at, booking["booked_at"], "attendance" if attended else "no-show", "booking"
        )
        if attended:
            self._attended(booking_id=booking_id, actor=actor, at=at)
        else:
            self._no_show(booking_id=booking_id, actor=actor, at=at)

    @event("Attended")
    def _attended(self, booking_id: UUID, actor: Actor, at: datetime) -> None:
        self.bookings[booking_id]["attended"] = True

    @event("NoShow")
    def _no_show(self, booking_id: UUID, actor: Actor, at: datetime) -> None:
        self.bookings[booking_id]["attended"] = False

    def _booking(self, booking_id: UUID) -> dict[str, Any]:
        try:
            return self.bookings[booking_id]
        except KeyError:
            raise UnknownBooking("no such booking in this quota") from None

"""Expert slots and reserved beds: published by a hospital for one center or district, booked
by family doctors, never overbooked, released at the cutoff, attendance recorded once."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest

from domain.common import Actor, InvalidValue, NotPermitted, stable_id
from domain.quotas import (
    AlreadyBooked,
    AttendanceAlreadyRecorded,
    NotReservedForYou,
    Quota,
    QuotaFull,
    QuotaReleased,
    SessionNotYetHeld,
    SessionStarted,
    UnknownBooking,
)
from tests.unit.story import (
    CENTER,
    GP,
    HOSPITAL,
    HOSPITAL_DESK,
    OTHER_CENTER,
    OTHER_CENTER_GP,
    OTHER_HOSPITAL_DESK,
    at,
    days,
    recorded,
)

QUOTA = stable_id("unit", "quota")
SESSION = days(7)
CUTOFF = at(days(6), 12)


def quota(slots: int = 2, **reserved: object) -> Quota:
    options = reserved or {"reserved_for_center": CENTER}
    return Quota.publish(
        QUOTA,
        hospital_id=HOSPITAL,
        kind="expert",
        department="cardiology",
        session_date=SESSION,
        slots=slots,
        release_at=CUTOFF,
        actor=HOSPITAL_DESK,
        at=at(),
        expert="周主任",
        half_day="am",
        **options,  # type: ignore[arg-type]
    )


def patient(n: int) -> UUID:
    return stable_id("unit", "patient", n)


def booking(n: int) -> UUID:
    return stable_id("unit", "booking", n)


def book(q: Quota, n: int, actor: Actor = GP, when: datetime | None = None) -> None:
    q.book(
        booking(n),
        patient_id=patient(n),
        referral_id=None,
        actor=actor,
        actor_district="鼓楼区",
        at=when or at(days(1)),
    )


def test_a_hospital_publishes_expert_slots_for_a_session_and_half_day() -> None:
    q = quota(slots=5)
    assert (q.department, q.expert, q.session_date, q.half_day, q.slots_left) == (
        "cardiology",
        "周主任",
        SESSION,
        "am",
        5,
    )
    assert recorded(q) == ["Published"]


def test_reserved_beds_name_a_ward_and_dates() -> None:
    q = Quota.publish(
        QUOTA,
        hospital_id=HOSPITAL,
        kind="bed",
        department="cardiology",
        session_date=SESSION,
        slots=3,
        release_at=CUTOFF,
        actor=HOSPITAL_DESK,
        at=at(),
        ward="心内科一病区",
        end_date=SESSION + timedelta(days=14),
        reserved_for_district="鼓楼区",
    )
    assert (q.ward, q.end_date) == ("心内科一病区", SESSION + timedelta(days=14))
    with pytest.raises(InvalidValue):
        Quota.publish(
            QUOTA, hospital_id=HOSPITAL, kind="bed", department="cardiology", session_date=SESSION, slots=3, release_at=CUTOFF, actor=HOSPITAL_DESK, at=at(),
            reserved_for_district="鼓楼区",
        )  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"slots": 0},
        {"half_day": "evening"},
        {"release_at": at(SESSION + timedelta(days=1))},
        {"reserved_for_district": "鼓楼区"},  # and a center: one or the other
        {"reserved_for_center": None},  # neither
    ],
)
def test_a_quota_has_slots_a_half_day_a_cutoff_by_the_session_and_one_reservation(
    change: dict[str, object],
) -> None:
    args: dict[str, object] = {
        "slots": 2,
        "half_day": "am",
        "release_at": CUTOFF,
        "reserved_for_center": CENTER,
    }
    args.update(change)
    with pytest.raises(InvalidValue):
        Quota.publish(
            QUOTA, hospital_id=HOSPITAL, kind="expert", department="cardiology", session_date=SESSION, actor=HOSPITAL_DESK, at=at(),
            **args,  # type: ignore[arg-type]
        )  # fmt: skip


def test_a_hospital_publishes_only_its_own_quotas() -> None:
    with pytest.raises(NotPermitted):
        Quota.publish(
            QUOTA, hospital_id=HOSPITAL, kind="expert", department="cardiology", session_date=SESSION, slots=2, release_at=CUTOFF, actor=OTHER_HOSPITAL_DESK,
            at=at(), half_day="am", reserved_for_center=CENTER,
        )  # fmt: skip


def test_never_more_bookings_than_slots() -> None:
    q = quota(slots=2)
    book(q, 1)
    book(q, 2)
    with pytest.raises(QuotaFull):
        book(q, 3)
    assert (len(q.active_bookings), q.slots_left) == (2, 0)


def test_one_booking_per_patient_per_session() -> None:
    q = quota(slots=3)
    book(q, 1)
    with pytest.raises(AlreadyBooked):
        q.book(
            booking(9),
            patient_id=patient(1),
            referral_id=None,
            actor=GP,
            actor_district="鼓楼区",
            at=at(days(1)),
        )


def test_a_booking_is_tied_to_a_referral_and_the_team_when_given() -> None:
    q = quota()
    referral, team = stable_id("r"), stable_id("t")
    q.book(
        booking(1),
        patient_id=patient(1),
        referral_id=referral,
        actor=GP,
        actor_district="鼓楼区",
        at=at(days(1)),
        team_id=team,
    )
    assert q.bookings[booking(1)]["referral_id"] == referral
    assert q.bookings[booking(1)]["team_id"] == team
    assert q.bookings[booking(1)]["center_id"] == CENTER


def test_only_the_reserved_center_or_district_books() -> None:
    with pytest.raises(NotReservedForYou):
        book(quota(), 1, actor=OTHER_CENTER_GP)
    by_district = quota(reserved_for_district="江宁区")
    with pytest.raises(NotReservedForYou):
        book(by_district, 1)  # the GP's center is in 鼓楼区
    by_district.book(
        booking(1),
        patient_id=patient(1),
        referral_id=None,
        actor=OTHER_CENTER_GP,
        actor_district="江宁区",
        at=at(days(1)),
    )


def test_a_hospital_does_not_book_family_doctors_slots() -> None:
    q = quota(reserved_for_district="鼓楼区")
    with pytest.raises(NotReservedForYou):
        q.book(
            booking(1),
            patient_id=patient(1),
            referral_id=None,
            actor=HOSPITAL_DESK,
            actor_district="鼓楼区",
            at=at(days(1)),
            booker_is_center=False,
        )


def test_cancelling_before_the_session_frees_the_slot() -> None:
    q = quota(slots=1)
    book(q, 1)
    q.cancel_booking(booking(1), "患者改期", GP, at(days(2)))
    assert q.slots_left == 1
    book(q, 2)
    assert list(q.active_bookings) == [booking(2)]
    assert recorded(q) == ["Published", "Booked", "BookingCancelled", "Booked"]


def test_a_booking_is_cancelled_once_by_its_center_before_the_session_day() -> None:
    q = quota(slots=2)
    book(q, 1)
    book(q, 2)
    with pytest.raises(NotPermitted):
        q.cancel_booking(booking(1), "x", OTHER_CENTER_GP, at(days(2)))
    with pytest.raises(SessionStarted):
        q.cancel_booking(booking(1), "x", GP, at(SESSION))
    q.cancel_booking(booking(2), "x", GP, at(days(2)))
    with pytest.raises(InvalidValue):
        q.cancel_booking(booking(2), "x", GP, at(days(2)))
    with pytest.raises(UnknownBooking):
        q.cancel_booking(booking(7), "x", GP, at(days(2)))


def test_at_the_cutoff_unbooked_slots_go_back_to_the_hospital_as_an_event() -> None:
    q = quota(slots=5)
    book(q, 1)
    book(q, 2)
    q.cancel_booking(booking(2), "x", GP, at(days(2)))
    with pytest.raises(InvalidValue):
        q.release(HOSPITAL_DESK, CUTOFF - timedelta(minutes=1))
    assert q.release(HOSPITAL_DESK, CUTOFF) == 4
    released = q.collect_events()[-1]
    assert (type(released).__name__, released.unbooked) == ("Released", 4)  # type: ignore[attr-defined]
    assert q.slots_left == 0
    assert q.release(HOSPITAL_DESK, CUTOFF) == 0  # once only
    assert q.collect_events() == []
    with pytest.raises(QuotaReleased):
        book(q, 3, when=CUTOFF)


def test_booking_stops_at_the_cutoff_even_before_the_release_is_recorded() -> None:
    with pytest.raises(QuotaReleased):
        book(quota(), 1, when=CUTOFF)


def test_only_the_publishing_hospital_releases() -> None:
    with pytest.raises(NotPermitted):
        quota().release(OTHER_HOSPITAL_DESK, CUTOFF)
    with pytest.raises(NotPermitted):
        quota().release(GP, CUTOFF)


def test_the_hospital_records_attendance_or_a_no_show_once_from_the_session_day() -> None:
    q = quota(slots=3)
    book(q, 1)
    book(q, 2)
    with pytest.raises(SessionNotYetHeld):
        q.record_attendance(booking(1), True, HOSPITAL_DESK, at(days(6)))
    with pytest.raises(NotPermitted):
        q.record_attendance(booking(1), True, GP, at(SESSION))
    q.record_attendance(booking(1), True, HOSPITAL_DESK, at(SESSION, 12))
    q.record_attendance(booking(2), False, HOSPITAL_DESK, at(SESSION, 12))
    with pytest.raises(AttendanceAlreadyRecorded):
        q.record_attendance(booking(1), False, HOSPITAL_DESK, at(SESSION, 13))
    assert [b["attended"] for b in q.bookings.values()] == [True, False]
    assert recorded(q)[-2:] == ["Attended", "NoShow"]


def test_a_cancelled_booking_has_no_attendance() -> None:
    q = quota()
    book(q, 1)
    q.cancel_booking(booking(1), "x", GP, at(days(2)))
    with pytest.raises(InvalidValue):
        q.record_attendance(booking(1), True, HOSPITAL_DESK, at(SESSION))


def test_a_center_books_only_for_its_own_patients() -> None:
    q = quota()
    with pytest.raises(NotPermitted):
        q.book(
            booking(1),
            patient_id=patient(1),
            referral_id=None,
            actor=GP,
            actor_district="鼓楼区",
            at=at(days(1)),
            patient_centers=frozenset({OTHER_CENTER}),
        )
    q.book(
        booking(2),
        patient_id=patient(2),
        referral_id=None,
        actor=GP,
        actor_district="鼓楼区",
        at=at(days(1)),
        patient_centers=frozenset({CENTER}),
    )
    assert list(q.active_bookings) == [booking(2)]

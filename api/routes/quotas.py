"""Expert slots and reserved beds (专家号 / 预留床位): publish, book, cancel, attend, release."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from api.deps import (
    ApplicationDep,
    CenterStaff,
    HospitalStaff,
    PageDep,
    QueriesDep,
    Reader,
)
from api.openapi import COMMAND_ERRORS, QUERY_ERRORS, done, example_response, paged, visible
from api.schemas import (
    EXAMPLE_ID,
    HOSPITAL_ID,
    BookSlot,
    CancelBooking,
    CommandResult,
    ItemsPage,
    PublishQuota,
    RecordAttendance,
    ReleaseQuota,
)

router = APIRouter(prefix="/quotas", tags=["quotas"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def publish(body: PublishQuota, who: HospitalStaff, app: ApplicationDep) -> CommandResult:
    """Your hospital reserves slots of a session (or beds of a ward) for a center or district."""
    return done(
        app.publish_quota(
            who.actor.org_id,
            kind=body.kind,
            department=body.department,
            session_date=body.session_date,
            slots=body.slots,
            release_at=body.release_at,
            actor=who.actor,
            id=body.id,
            at=body.at,
            expert=body.expert,
            ward=body.ward,
            half_day=body.half_day,
            end_date=body.end_date,
            reserved_for_center=body.reserved_for_center,
            reserved_for_district=body.reserved_for_district,
        )
    )


@router.post(
    "/{quota_id}/bookings", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS
)
def book(quota_id: UUID, body: BookSlot, who: CenterStaff, app: ApplicationDep) -> CommandResult:
    """Book a slot for one of your patients (never more bookings than slots)."""
    return done(
        app.book_slot(
            quota_id,
            patient_id=body.patient_id,
            actor=who.actor,
            referral_id=body.referral_id,
            id=body.id,
            at=body.at,
        )
    )


@router.post(
    "/{quota_id}/bookings/{booking_id}/cancel",
    response_model=CommandResult,
    responses=COMMAND_ERRORS,
)
def cancel_booking(
    quota_id: UUID, booking_id: UUID, body: CancelBooking, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """The booking center frees the slot before the session day."""
    return done(
        app.cancel_booking(
            quota_id, booking_id=booking_id, reason=body.reason, actor=who.actor, at=body.at
        )
    )


@router.post(
    "/{quota_id}/bookings/{booking_id}/attendance",
    response_model=CommandResult,
    responses=COMMAND_ERRORS,
)
def record_attendance(
    quota_id: UUID,
    booking_id: UUID,
    body: RecordAttendance,
    who: HospitalStaff,
    app: ApplicationDep,
) -> CommandResult:
    """The hospital records attendance or a no-show, on or after the session day."""
    return done(
        app.record_attendance(
            quota_id, booking_id=booking_id, attended=body.attended, actor=who.actor, at=body.at
        )
    )


@router.post("/{quota_id}/release", response_model=CommandResult, responses=COMMAND_ERRORS)
def release(
    quota_id: UUID, body: ReleaseQuota, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """At the cutoff, unbooked slots go back to the hospital."""
    return done(app.release_quota(quota_id, actor=who.actor, at=body.at))


QUOTA_EXAMPLE = {
    "id": EXAMPLE_ID,
    "hospital_id": HOSPITAL_ID,
    "kind": "expert",
    "department": "cardiology",
    "session_date": "2026-06-10",
    "slots": 10,
    "slots_left": 4,
    "release_at": "2026-06-09T12:00:00+08:00",
    "bookings": [],
}


@router.get("", response_model=ItemsPage, responses=QUERY_ERRORS)
def open_quotas(who: Reader, queries: QueriesDep, page: PageDep) -> ItemsPage:
    """Quotas you may see that still have slots left."""
    return paged(queries.open_quotas(who.scope, page), page.limit, page.offset)


@router.get("/{quota_id}", responses={**QUERY_ERRORS, **example_response(QUOTA_EXAMPLE)})
def quota(quota_id: UUID, who: Reader, queries: QueriesDep) -> dict[str, Any]:
    """One quota with its bookings, slots left and release time."""
    return visible(queries.quota(who.scope, quota_id))

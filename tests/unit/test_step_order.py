"""Back-dating cannot break step order (issue 15): a hospital accepted a referral dated 126
years before it was requested, and the value fed the turnaround KPI. Each step is dated no
earlier than the step it follows, in the aggregate that owns both; one stable code
(``step-before-predecessor``), a message naming the two steps and their moments (nothing
personal). The same moment is fine; old events are never checked when folded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from domain.common import StepBeforePredecessor, stable_id
from domain.contracts import Contract
from domain.followups import FollowUps, single_obligation
from domain.patients import Patient
from domain.quotas import Quota
from domain.referrals import Referral
from tests.unit.story import (
    CENTER,
    CENTER_ADMIN,
    GP,
    HOSPITAL,
    HOSPITAL_DESK,
    OTHER_CENTER,
    OTHER_CENTER_GP,
    OTHER_TEAM,
    PATIENT,
    TEAM,
    at,
    days,
)
from tests.unit.test_patients import contracted
from tests.unit.test_quotas import book, booking, quota

LONG_AGO = datetime(1900, 1, 2, tzinfo=UTC)


def refused(step: Callable[[], object], name: str, predecessor: str) -> StepBeforePredecessor:
    with pytest.raises(StepBeforePredecessor) as caught:
        step()
    error = caught.value
    assert error.code == "step-before-predecessor"
    assert error.details == {"step": name, "predecessor": predecessor}
    return error


# --- referrals ------------------------------------------------------------------------------


def requested(when: datetime | None = None) -> Referral:
    return Referral.request(
        stable_id("unit", "referral"),
        patient_id=PATIENT,
        contract_id=stable_id("unit", "contract"),
        team_id=TEAM,
        center_id=CENTER,
        hospital_id=HOSPITAL,
        department="cardiology",
        reason="血压控制不佳",
        diagnosis="I10",
        urgency="urgent",
        registered_poor=False,
        actor=GP,
        at=when or at(),
        team_speaks_for_actor=True,
    )


def test_an_acceptance_dated_before_the_request_is_refused_naming_both_moments() -> None:
    r = requested()
    error = refused(lambda: r.accept(HOSPITAL_DESK, LONG_AGO), "acceptance", "request")
    assert error.message == (
        "the acceptance (1900-01-02T00:00:00+00:00) cannot come before the request "
        "(2026-06-01T09:00:00+00:00) it follows"
    )
    assert r.status == "requested" and not r.collect_events()[1:]
    r.accept(HOSPITAL_DESK, at())  # the same moment is no earlier
    assert r.status == "accepted"


def test_a_rejection_or_a_cancellation_is_not_dated_before_its_predecessor() -> None:
    r = requested()
    refused(lambda: r.reject("no_capacity", "", HOSPITAL_DESK, at(hour=8)), "rejection", "request")
    refused(lambda: r.cancel("改约", GP, at(hour=8), True), "cancellation", "request")
    r.accept(HOSPITAL_DESK, at(hour=11))
    refused(lambda: r.cancel("改约", GP, at(hour=10), True), "cancellation", "acceptance")
    r.cancel("改约", GP, at(hour=12), True)
    assert r.status == "cancelled"


def test_the_steps_at_the_hospital_and_back_follow_each_other() -> None:
    r = requested()
    r.accept(HOSPITAL_DESK, at(hour=10))
    refused(lambda: r.arrive(HOSPITAL_DESK, at(hour=9)), "arrival", "acceptance")
    r.arrive(HOSPITAL_DESK, at(days(1)))
    refused(lambda: r.admit("一病区", HOSPITAL_DESK, at()), "admission", "arrival")
    r.admit("一病区", HOSPITAL_DESK, at(days(1), 12))

    def back(when: datetime) -> None:
        r.return_to_community("出院", [], "", days(20), HOSPITAL_DESK, when)

    refused(lambda: back(at(days(1), 11)), "return to community", "admission")
    back(at(days(5)))
    refused(
        lambda: r.acknowledge_return(GP, at(days(4)), True),
        "acknowledgement",
        "return to community",
    )
    r.acknowledge_return(GP, at(days(5), 10), True)
    assert r.status == "acknowledged"


# --- quotas ---------------------------------------------------------------------------------


def test_bookings_and_their_outcomes_follow_the_publication_and_the_booking() -> None:
    q = quota()  # published at(): 09:00 today
    refused(lambda: book(q, 1, when=at(hour=8)), "booking", "quota's publication")
    book(q, 1, when=at(days(2)))
    refused(
        lambda: q.cancel_booking(booking(1), "好转", GP, at(days(1))), "cancellation", "booking"
    )
    q.cancel_booking(booking(1), "好转", GP, at(days(3)))
    book(q, 2, when=at(days(3)))
    # attendance is on the session day, and after its booking (with a cutoff on that day, a
    # booking made that morning)
    late = Quota.publish(
        stable_id("unit", "quota", "same-day cutoff"),
        hospital_id=HOSPITAL,
        kind="expert",
        department="cardiology",
        session_date=days(7),
        slots=2,
        release_at=at(days(7), 12),
        actor=HOSPITAL_DESK,
        at=at(),
        half_day="pm",
        reserved_for_center=CENTER,
    )
    book(late, 3, when=at(days(7), 7))
    refused(
        lambda: late.record_attendance(booking(3), True, HOSPITAL_DESK, at(days(7), 6)),
        "attendance",
        "booking",
    )
    refused(
        lambda: late.record_attendance(booking(3), False, HOSPITAL_DESK, at(days(7), 6)),
        "no-show",
        "booking",
    )
    late.record_attendance(booking(3), True, HOSPITAL_DESK, at(days(7), 8))


def test_a_release_follows_the_publication() -> None:
    q = Quota.publish(
        stable_id("unit", "quota", "late"),
        hospital_id=HOSPITAL,
        kind="expert",
        department="cardiology",
        session_date=days(7),
        slots=2,
        release_at=at(days(1)),  # a cutoff the publication itself came after
        actor=HOSPITAL_DESK,
        at=at(days(3)),
        half_day="am",
        reserved_for_center=CENTER,
    )
    refused(lambda: q.release(HOSPITAL_DESK, at(days(2))), "release", "quota's publication")
    assert q.release(HOSPITAL_DESK, at(days(3))) == 2


# --- contracts ------------------------------------------------------------------------------


def signed() -> Contract:
    start = date(2026, 3, 1)
    return Contract.sign(
        stable_id("unit", "contract"),
        patient_id=PATIENT,
        team_id=TEAM,
        center_id=CENTER,
        package="basic",
        start=start,
        actor=GP,
        at=at(start),
    )


def test_a_contracts_steps_follow_its_signing_and_each_other() -> None:
    c = signed()
    refused(lambda: c.renew(1, GP, LONG_AGO), "renewal", "contract's previous step")
    other = stable_id("unit", "团队三")
    refused(
        lambda: c.change_team(other, CENTER, "就近", GP, at(date(2026, 2, 1))),
        "team change",
        "contract's previous step",
    )
    c.renew(1, GP, at(date(2026, 5, 1)))
    refused(
        lambda: c.terminate("迁出", GP, at(date(2026, 4, 1))),
        "termination",
        "contract's previous step",
    )
    c.terminate("迁出", GP, at(date(2026, 5, 2)))
    assert c.status == "terminated"


def test_a_contracts_expiry_follows_its_last_step() -> None:
    c = signed()
    c.change_team(stable_id("unit", "团队三"), CENTER, "就近", GP, at(date(2027, 3, 3)))
    refused(
        lambda: c.expire(date(2027, 3, 2), GP, at(date(2027, 3, 2))),
        "expiry",
        "contract's previous step",
    )
    c.expire(date(2027, 3, 4), GP, at(date(2027, 3, 4)))


# --- transfers ------------------------------------------------------------------------------


def asked(p: Patient, when: datetime) -> None:
    p.request_transfer(
        center_id=OTHER_CENTER,
        team_id=OTHER_TEAM,
        consent="转签同意书 0042",
        district="江宁区",
        actor=OTHER_CENTER_GP,
        at=when,
    )


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("release of the transfer", lambda p, w: p.release_transfer(CENTER_ADMIN, w)),
        ("decline of the transfer", lambda p, w: p.decline_transfer("随访中", CENTER_ADMIN, w)),
        ("withdrawal of the transfer", lambda p, w: p.withdraw_transfer(OTHER_CENTER_GP, w)),
    ],
)
def test_answers_to_a_transfer_request_follow_it(
    name: str, step: Callable[[Patient, datetime], object]
) -> None:
    p = contracted()
    asked(p, at(days(2)))
    refused(lambda: step(p, at(days(1))), name, "transfer request")
    step(p, at(days(2)))


# --- follow-ups -----------------------------------------------------------------------------


def test_a_visit_meets_a_follow_up_only_from_the_day_it_was_opened() -> None:
    referral = stable_id("unit", "referral")
    owed = single_obligation("after_referral", referral, days(10), days(24))
    f = FollowUps.open(PATIENT, CENTER, GP, at())
    f.schedule([owed], GP, at(days(10)))
    visit = stable_id("unit", "visit")

    def record(on: date) -> object:
        return f.record_visit(visit, on, "phone", {}, None, "", GP, at(days(30)), owed.id)

    refused(lambda: record(days(9)), "visit", "start of the follow-up it meets")
    assert record(days(10)) == [owed.id]

"""Rules about time (local calendar days, deadlines against the recording time, no moments
before 1900) and identity (whose patient, whose id), on SQLite and real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.application import AlreadyExists, CareCoordination
from domain.common import Actor, InvalidValue, NotPermitted
from domain.followups import FollowUps
from domain.patients import Patient
from domain.quotas import QuotaReleased, SessionStarted
from domain.referrals import Referral
from tests.conftest import Clock
from tests.world import build_world


def test_a_moment_before_1900_is_refused(app: CareCoordination) -> None:
    world = build_world(app)
    pid = world.patient()
    with pytest.raises(InvalidValue):
        app.tag_patient(
            pid,
            tag="hypertension",
            actor=world.center_admin,
            at=datetime(1, 1, 1, 0, 30, tzinfo=UTC),
        )
    assert "hypertension" not in app.load(Patient, pid).tags


def test_days_are_counted_in_the_deployments_time_zone(app: CareCoordination, clock: Clock) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    # 07:30 on 2 June in China is still 1 June in UTC: a visit dated 2 June is not "future".
    clock.now = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
    assert app.now().date().isoformat() == "2026-06-02"
    app.record_follow_up(pid, on=app.now().date(), kind="face_to_face", actor=world.gp)
    # and the 14-day follow-up after a referral counts from the local day
    rid = world.referral(pid)
    assert app.load(Referral, rid).follow_up_due.isoformat() == "2026-06-16"


def test_a_back_dated_booking_cannot_take_a_slot_after_the_cutoff(
    app: CareCoordination, clock: Clock
) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    quota = world.quota(slots=3, days_ahead=3)  # cutoff: two days from now
    clock.advance(days=2, hours=1)
    with pytest.raises(QuotaReleased):
        app.book_slot(quota, patient_id=pid, actor=world.gp)
    with pytest.raises(QuotaReleased):  # claiming it happened before the cutoff changes nothing
        app.book_slot(quota, patient_id=pid, actor=world.gp, at=clock.now - timedelta(hours=3))


def test_a_back_dated_cancellation_on_the_session_day_is_refused(
    app: CareCoordination, clock: Clock
) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    quota = world.quota(slots=3, days_ahead=3)
    booking = app.book_slot(quota, patient_id=pid, actor=world.gp).id
    clock.advance(days=3)  # the session day
    with pytest.raises(SessionStarted):
        app.cancel_booking(
            quota,
            booking_id=booking,
            reason="patient unwell",
            actor=world.gp,
            at=clock.now - timedelta(days=1),
        )


def test_a_center_cannot_sign_another_centers_patient(app: CareCoordination) -> None:
    world = build_world(app)
    pid = world.patient()  # registered at world.center
    other_admin = Actor("other-admin", world.other_center)
    other_team = app.form_team(world.other_center, name="江宁团队", actor=other_admin).id
    app.add_team_member(
        other_team,
        staff_id="gp-9",
        name="赵医生",
        role="general_practitioner",
        org_id=world.other_center,
        actor=other_admin,
    )
    with pytest.raises(NotPermitted):
        app.sign_contract(
            pid,
            team_id=other_team,
            package="basic",
            start=world.today,
            actor=Actor("gp-9", world.other_center),
        )
    assert app.load(Patient, pid).contract_id is None
    app.sign_contract(
        pid, team_id=world.team, package="basic", start=world.today, actor=world.gp
    )  # its own center still can


def test_after_a_transfer_the_new_center_closes_the_referral_loop(
    app: CareCoordination,
) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    rid = world.referral(pid)
    world.transfer_to_other_center(pid)

    app.record_follow_up(pid, on=world.today, kind="phone", actor=Actor("gp-9", world.other_center))
    assert app.load(Referral, rid).followed_up_on == world.today


def test_a_return_to_community_opens_a_loop_of_its_own(app: CareCoordination) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    rid = world.referral(pid)
    app.record_follow_up(pid, on=world.today, kind="phone", actor=world.gp)  # the 14-day follow-up
    assert app.load(Referral, rid).followed_up_on == world.today
    app.accept_referral(rid, actor=world.hospital_staff)
    app.record_arrival(rid, actor=world.hospital_staff)
    app.return_to_community(
        rid,
        summary="stable",
        prescriptions=[],
        rehabilitation="rest",
        follow_up_due=world.today + timedelta(days=7),
        actor=world.hospital_staff,
    )
    assert app.load(Referral, rid).followed_up_on is None  # the return's follow-up is owed
    app.record_follow_up(pid, on=world.today, kind="face_to_face", actor=world.gp)
    assert app.load(Referral, rid).followed_up_on == world.today
    owed = app.load(FollowUps, FollowUps.id_for(pid)).open_obligations()
    assert [o["reason"] for o in owed if o["source_id"] == rid] == []


def test_a_taken_id_is_refused_at_once_not_retried_as_contention(app: CareCoordination) -> None:
    world = build_world(app)
    pid = world.patient()
    with pytest.raises(AlreadyExists):
        app.register_patient(
            "李四",
            sex="M",
            birth_date=datetime(1960, 1, 1).date(),
            national_id="11010519491231002X",
            phone="13800000001",
            center_id=world.center,
            actor=world.center_admin,
            id=pid,
        )

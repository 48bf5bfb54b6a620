"""The rules the issue names, each on SQLite and on real PostgreSQL, including under races."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from domain.application import CareCoordination
from domain.common import Actor, DomainError
from domain.patients import ContractAlreadyActive
from domain.quotas import QuotaFull
from domain.referrals import NotAddressedToYou, Referral, ReferralAlreadyAccepted
from tests.conftest import Clock
from tests.world import build_world


def test_two_concurrent_signings_for_one_patient_make_one_contract(
    make_app: Callable[[], CareCoordination],
) -> None:
    world = build_world(make_app())
    patient = world.patient()
    apps = [make_app() for _ in range(2)]

    def sign(app: CareCoordination) -> str:
        try:
            app.sign_contract(
                patient, team_id=world.team, package="basic", start=world.today, actor=world.gp
            )
            return "signed"
        except ContractAlreadyActive:
            return "refused"

    for _ in range(3):  # several rounds: the race must be lost every time, not by luck
        with ThreadPoolExecutor(2) as pool:
            results = sorted(pool.map(sign, apps))
        assert results in (["refused", "signed"], ["refused", "refused"])
    stored = world.app.load(__import__("domain.patients").patients.Patient, patient)
    assert stored.contract_id is not None
    signed = [
        n
        for n in world.app.recorder.select_notifications(start=1, limit=10_000)
        if n.topic.endswith("Contract.Signed")
    ]
    assert len(signed) == 1


def test_fifty_concurrent_bookings_for_ten_slots_book_exactly_ten(
    make_app: Callable[[], CareCoordination],
) -> None:
    world = build_world(make_app())
    patients = [world.contracted_patient(serial=i) for i in range(50)]
    quota = world.quota(slots=10)
    apps = [make_app() for _ in range(5)]

    def book(i: int) -> bool:
        try:
            apps[i % 5].book_slot(quota, patient_id=patients[i], actor=world.gp)
            return True
        except QuotaFull:
            return False

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(book, range(50)))
    assert results.count(True) == 10
    stored = world.app.load(__import__("domain.quotas").quotas.Quota, quota)
    assert len(stored.active_bookings) == 10
    assert stored.slots_left == 0


def test_an_accepted_referral_cannot_be_rejected(app: CareCoordination) -> None:
    world = build_world(app)
    rid = world.referral()
    app.accept_referral(rid, actor=world.hospital_staff)
    with pytest.raises(ReferralAlreadyAccepted):
        app.reject_referral(rid, reason_code="no_capacity", actor=world.hospital_staff)
    assert app.load(Referral, rid).status == "accepted"


def test_a_hospital_cannot_accept_a_referral_addressed_to_another(app: CareCoordination) -> None:
    world = build_world(app)
    rid = world.referral()
    with pytest.raises(NotAddressedToYou):
        app.accept_referral(rid, actor=world.other_hospital_staff)
    assert app.load(Referral, rid).status == "requested"


def test_follow_up_is_due_fourteen_days_after_an_upward_referral(
    app: CareCoordination, clock: Clock
) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    requested = clock.advance(days=3)
    rid = world.referral(pid)
    referral = app.load(Referral, rid)
    assert referral.follow_up_due == requested.date() + timedelta(days=14)
    from domain.followups import FollowUps

    owed = [
        o
        for o in app.load(FollowUps, FollowUps.id_for(pid)).open_obligations()
        if o["reason"] == "after_referral"
    ]
    assert [o["due"] for o in owed] == [requested.date() + timedelta(days=14)]


def test_registered_poor_patients_get_the_green_channel(app: CareCoordination) -> None:
    world = build_world(app)
    poor = world.contracted_patient(tags=("registered_poor",), serial=1)
    other = world.contracted_patient(serial=2)
    assert app.load(Referral, world.referral(poor)).green_channel is True
    assert app.load(Referral, world.referral(other)).green_channel is False


def test_every_event_records_who_acted_and_when(app: CareCoordination, clock: Clock) -> None:
    world = build_world(app)
    rid = world.referral()
    clock.advance(hours=10)
    back_dated = clock.now - timedelta(hours=5)  # still after the request
    app.accept_referral(rid, actor=world.hospital_staff, at=back_dated)
    last = app.repository.get(rid)
    events = list(app.events.get(rid))
    accepted = events[-1]
    assert type(accepted).__qualname__ == "Referral.Accepted"
    assert accepted.actor == Actor("cardio-desk", world.hospital)  # type: ignore[attr-defined]
    assert accepted.at == back_dated  # type: ignore[attr-defined]
    assert accepted.timestamp > back_dated  # recorded later than it happened
    assert last.version == 2


def test_a_step_from_the_future_is_refused(app: CareCoordination, clock: Clock) -> None:
    world = build_world(app)
    rid = world.referral()
    with pytest.raises(DomainError):
        app.accept_referral(rid, actor=world.hospital_staff, at=clock.now + timedelta(days=1))

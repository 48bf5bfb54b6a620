"""Rules that span aggregates, through the application, on SQLite and on real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from uuid import uuid4

import pytest

from domain.application import CareCoordination
from domain.common import Actor, NotFound, NotPermitted
from domain.contracts import Contract, ContractNotActive
from domain.followups import FollowUps
from domain.patients import (
    ContractAlreadyActive,
    NoTransferRequested,
    Patient,
    PatientMovedAway,
    TransferAlreadyRequested,
    TransferRequired,
)
from domain.quotas import Quota, QuotaFull
from domain.referrals import Referral
from domain.teams import TeamCannotTakeContracts
from tests.conftest import Clock
from tests.world import build_world, national_id


def topics(app: CareCoordination) -> Counter[str]:
    """How many events of each kind the log holds."""
    return Counter(
        n.topic.rsplit(".", 1)[-1]
        for n in app.recorder.select_notifications(start=1, limit=100_000)
    )


def test_a_household_signs_all_together_or_not_at_all(app: CareCoordination) -> None:
    world = build_world(app)
    husband = world.patient("王建国", serial=1)
    wife = world.contracted_patient(serial=2)  # already signed on her own
    child = world.patient("王小明", serial=3)
    before = topics(app)

    with pytest.raises(ContractAlreadyActive):
        app.sign_household(
            [husband, wife, child],
            team_id=world.team,
            package="basic",
            start=world.today,
            actor=world.gp,
        )

    assert topics(app) == before
    assert app.load(Patient, husband).contract_id is None
    assert app.load(Patient, child).contract_id is None


def test_a_household_signs_with_one_act(app: CareCoordination) -> None:
    world = build_world(app)
    members = [world.patient(serial=i) for i in range(3)]
    signed = app.sign_household(
        members, team_id=world.team, package="basic", start=world.today, actor=world.gp
    )
    contracts = [app.load(Contract, o.id) for o in signed]
    assert len({c.household_id for c in contracts}) == 1
    assert len({o.position for o in signed}) == 1  # one atomic write
    assert [app.load(Patient, p).contract_id for p in members] == [c.id for c in contracts]


def test_a_team_without_a_general_practitioner_cannot_sign(app: CareCoordination) -> None:
    world = build_world(app)
    nurses_only = app.form_team(world.center, name="护理团队", actor=world.center_admin).id
    app.add_team_member(
        nurses_only,
        staff_id="nurse-2",
        name="赵护士",
        role="nurse",
        org_id=world.center,
        actor=world.center_admin,
    )
    patient = world.patient()
    with pytest.raises(TeamCannotTakeContracts):
        app.sign_contract(
            patient,
            team_id=nurses_only,
            package="basic",
            start=world.today,
            actor=world.center_admin,
        )
    assert app.load(Patient, patient).contract_id is None


def test_when_the_last_gp_leaves_the_team_takes_no_new_contracts(app: CareCoordination) -> None:
    world = build_world(app)
    signed = world.contracted_patient(serial=1)
    app.remove_team_member(world.team, staff_id="gp-1", actor=world.center_admin)
    with pytest.raises(TeamCannotTakeContracts):
        app.sign_contract(
            world.patient(serial=2),
            team_id=world.team,
            package="basic",
            start=world.today,
            actor=world.gp,
        )
    assert app.load(Patient, signed).has_active_contract(world.today)  # existing ones stay


def test_a_contract_moves_only_to_a_team_with_a_gp(app: CareCoordination) -> None:
    world = build_world(app)
    contract = app.load(Patient, world.contracted_patient()).contract_id
    assert contract is not None
    empty = app.form_team(world.center, name="新团队", actor=world.center_admin).id
    with pytest.raises(TeamCannotTakeContracts):
        app.change_contract_team(contract, team_id=empty, reason="调整", actor=world.center_admin)
    app.add_team_member(
        empty,
        staff_id="gp-2",
        name="周医生",
        role="general_practitioner",
        org_id=world.center,
        actor=world.center_admin,
    )
    app.change_contract_team(contract, team_id=empty, reason="调整", actor=world.center_admin)
    assert app.load(Contract, contract).team_id == empty


def test_a_patient_who_moved_away_cannot_sign(app: CareCoordination) -> None:
    world = build_world(app)
    patient = world.patient()
    app.move_patient_away(patient, destination="上海市", actor=world.center_admin)
    with pytest.raises(PatientMovedAway):
        app.sign_contract(
            patient, team_id=world.team, package="basic", start=world.today, actor=world.gp
        )
    assert "Signed" not in topics(app)


def test_an_expired_contract_frees_the_patient_for_a_new_one(
    app: CareCoordination, clock: Clock
) -> None:
    world = build_world(app)
    patient = world.contracted_patient()
    contract = app.load(Patient, patient).contract_id
    assert contract is not None
    clock.advance(days=365)
    app.expire_contract(contract, actor=world.center_admin)
    assert app.load(Contract, contract).status == "expired"
    app.sign_contract(
        patient, team_id=world.team, package="basic", start=world.today, actor=world.gp
    )
    assert app.load(Patient, patient).contract_id != contract


def test_a_renewal_extends_the_patient_and_the_follow_ups_owed(
    app: CareCoordination, clock: Clock
) -> None:
    world = build_world(app)
    patient = world.contracted_patient(tags=("type2_diabetes",))
    contract = app.load(Patient, patient).contract_id
    assert contract is not None
    clock.advance(days=300)
    app.renew_contract(contract, years=2, actor=world.center_admin)
    stored = app.load(Patient, patient)
    assert stored.contract_until == app.load(Contract, contract).end
    followups = app.load(FollowUps, FollowUps.id_for(patient))
    assert len(followups.obligations) == 4 * 3


def test_only_the_contracted_team_or_its_center_refers(app: CareCoordination) -> None:
    world = build_world(app)
    patient = world.contracted_patient()
    other_center = Actor("gp-9", world.other_center)
    with pytest.raises(NotPermitted):
        app.request_referral(
            patient,
            hospital_id=world.hospital,
            department="cardiology",
            reason="r",
            diagnosis="I10",
            urgency="routine",
            actor=other_center,
        )
    world.referral(patient)  # the team's own GP may


def test_a_direct_return_is_acknowledged_and_followed_up_by_the_community(
    app: CareCoordination,
) -> None:
    world = build_world(app)
    patient = world.patient()
    due = world.today + timedelta(days=10)
    rid = app.start_return(
        patient,
        national_id=national_id(date(1950, 3, 4)),
        name="王秀英",
        hospital_id=world.hospital,
        department="cardiology",
        summary="PCI 术后",
        prescriptions=[{"drug": "阿司匹林"}],
        rehabilitation="心脏康复",
        follow_up_due=due,
        actor=world.hospital_staff,
    ).id
    with pytest.raises(NotPermitted):
        app.acknowledge_return(rid, actor=Actor("gp-9", world.other_center))
    app.acknowledge_return(rid, actor=world.gp)
    app.record_follow_up(patient, on=world.today, kind="phone", actor=world.gp)
    referral = app.load(Referral, rid)
    assert (referral.status, referral.followed_up_on) == ("acknowledged", world.today)


def test_concurrent_cancellations_and_bookings_keep_the_slots_consistent(
    make_app: Callable[[], CareCoordination],
) -> None:
    world = build_world(make_app())
    slots = 5
    first = [world.contracted_patient(serial=i) for i in range(slots)]
    later = [world.contracted_patient(serial=100 + i) for i in range(8)]
    quota = world.quota(slots=slots)
    bookings = [world.app.book_slot(quota, patient_id=p, actor=world.gp).id for p in first]
    apps = [make_app() for _ in range(4)]

    def act(i: int) -> str:
        app = apps[i % len(apps)]
        if i < 3:
            app.cancel_booking(quota, booking_id=bookings[i], reason="患者改期", actor=world.gp)
            return "cancelled"
        try:
            app.book_slot(quota, patient_id=later[i - 3], actor=world.gp)
            return "booked"
        except QuotaFull:
            return "full"

    with ThreadPoolExecutor(6) as pool:
        results = Counter(pool.map(act, range(3 + len(later))))

    stored = world.app.load(Quota, quota)
    assert results["cancelled"] == 3
    assert len(stored.active_bookings) == slots - 3 + results["booked"] <= slots
    assert stored.slots_left == slots - len(stored.active_bookings)
    assert not set(bookings[:3]) & set(stored.active_bookings)
    log = topics(world.app)
    assert log["Booked"] - log["BookingCancelled"] == len(stored.active_bookings)


def test_moving_away_ends_the_contract_and_withdraws_future_follow_ups(
    app: CareCoordination, clock: Clock
) -> None:
    world = build_world(app)
    pid = world.contracted_patient(tags=("type2_diabetes",))
    contract_id = app.load(Patient, pid).contract_id
    assert contract_id is not None
    clock.advance(days=40)
    app.move_patient_away(pid, destination="上海市", actor=world.center_admin)

    assert app.load(Contract, contract_id).status == "terminated"
    assert app.load(Patient, pid).contract_id is None
    still_open = app.load(FollowUps, FollowUps.id_for(pid)).open_obligations()
    # only the quarter already under way stays owed; later quarters are withdrawn
    assert [o["window_start"] <= clock.now.date() for o in still_open] == [True]


def test_a_released_transfer_moves_the_patients_contract_and_care_to_the_other_center(
    app: CareCoordination,
) -> None:
    world = build_world(app)
    pid = world.contracted_patient(tags=("hypertension",))
    contract_id = app.load(Patient, pid).contract_id
    assert contract_id is not None
    other_team = world.other_team()

    app.request_transfer(
        pid, **world.identity(pid), team_id=other_team, consent="同意书 7", actor=world.other_admin
    )
    before = topics(app)
    assert app.load(Patient, pid).center_id == world.center  # nothing moves until released
    app.release_transfer(pid, actor=world.center_admin)
    moved = topics(app) - before
    assert moved == Counter(
        {"TransferReleased": 1, "TeamChanged": 1, "Transferred": 2}  # patient and follow-ups
    )

    assert (app.load(Contract, contract_id).team_id, app.load(Contract, contract_id).center_id) == (
        other_team,
        world.other_center,
    )
    assert app.load(Patient, pid).center_id == world.other_center
    assert app.load(Patient, pid).district == "江宁区"
    with pytest.raises(NotPermitted):  # the old center no longer records the follow-ups
        app.record_follow_up(pid, on=world.today, kind="face_to_face", actor=world.gp)
    app.record_follow_up(
        pid,
        on=world.today,
        kind="face_to_face",
        actor=Actor("gp-9", world.other_center),
        measurements={"systolic_bp": 132, "diastolic_bp": 84},
    )
    assert len(app.load(FollowUps, FollowUps.id_for(pid)).visits) == 1


def test_a_team_change_to_another_center_is_refused_to_both_centers_alone(
    app: CareCoordination,
) -> None:
    """Issue #11, F2: a center of another district moved a patient to its own team."""
    world = build_world(app)
    pid = world.contracted_patient()
    contract_id = app.load(Patient, pid).contract_id
    assert contract_id is not None
    other_team = world.other_team()
    before = topics(app)
    with pytest.raises(NotPermitted):  # the other center: not its contract (404)
        app.change_contract_team(
            contract_id, team_id=other_team, reason="就近", actor=world.other_admin
        )
    with pytest.raises(TransferRequired):  # the patient's own center: it takes a transfer
        app.change_contract_team(contract_id, team_id=other_team, reason="就近", actor=world.gp)
    assert topics(app) == before
    assert app.load(Patient, pid).center_id == world.center


def test_a_transfer_request_changes_nothing_until_released_and_is_one_at_a_time(
    app: CareCoordination,
) -> None:
    world = build_world(app)
    pid = world.contracted_patient()
    team = world.other_team()
    with pytest.raises(NotPermitted):  # requested by the new team's own center only
        app.request_transfer(
            pid, **world.identity(pid), team_id=team, consent="同意书", actor=world.center_admin
        )
    app.request_transfer(
        pid, **world.identity(pid), team_id=team, consent="同意书", actor=world.other_admin
    )
    with pytest.raises(TransferAlreadyRequested):
        app.request_transfer(
            pid, **world.identity(pid), team_id=team, consent="同意书", actor=world.other_admin
        )
    with pytest.raises(NotPermitted):  # the requester does not release it
        app.release_transfer(pid, actor=world.other_admin)
    with pytest.raises(NotPermitted):  # nor does the patient's center withdraw it
        app.withdraw_transfer(pid, actor=world.center_admin)
    assert app.load(Patient, pid).center_id == world.center
    world.referral(pid)  # the current center still cares for the patient meanwhile
    app.decline_transfer(pid, reason="治疗中", actor=world.center_admin)
    with pytest.raises(NoTransferRequested):
        app.release_transfer(pid, actor=world.center_admin)
    app.request_transfer(
        pid, **world.identity(pid), team_id=team, consent="同意书 2", actor=world.other_admin
    )
    app.withdraw_transfer(pid, actor=world.other_admin)
    assert app.load(Patient, pid).transfer_request is None


def test_a_patient_without_an_active_contract_moves_when_asked_and_signs_there(
    app: CareCoordination,
) -> None:
    world = build_world(app)
    pid = world.patient()
    gone = world.contracted_patient(serial=9)
    app.move_patient_away(gone, destination="上海市", actor=world.center_admin)
    for patient in (pid, gone):
        app.request_transfer(
            patient,
            **world.identity(patient),
            team_id=world.other_team(),
            consent="同意书",
            actor=world.other_admin,
        )
        assert app.load(Patient, patient).center_id == world.other_center
        if patient == pid:  # never owed a follow-up: no stream is opened for the move
            with pytest.raises(NotFound):
                app.load(FollowUps, FollowUps.id_for(pid))
        app.sign_contract(
            patient,
            team_id=world.other_team(),
            package="basic",
            start=world.today,
            actor=world.other_admin,
        )
    with pytest.raises(NotPermitted):  # the old center has no say any more
        app.tag_patient(pid, tag="hypertension", actor=world.center_admin)


def test_a_direct_return_names_the_patient_as_the_encounter_did(app: CareCoordination) -> None:
    """Issue #11, F1: a made-up return opened any patient's data to a hospital."""
    world = build_world(app)
    patient = world.patient()
    right = national_id(date(1950, 3, 4))
    plan = {
        "hospital_id": world.hospital,
        "department": "cardiology",
        "summary": "PCI 术后",
        "prescriptions": [],
        "rehabilitation": "",
        "follow_up_due": world.today,
        "actor": world.hospital_staff,
    }
    before = topics(app)
    for nid, name in ((right, "王秀"), (national_id(date(1950, 3, 4), 999), "王秀英")):
        with pytest.raises(NotFound) as refused:
            app.start_return(patient, national_id=nid, name=name, **plan)
        assert refused.value.not_found
    with pytest.raises(NotPermitted):  # for another hospital
        app.start_return(
            patient,
            national_id=right,
            name="王秀英",
            **{**plan, "hospital_id": world.other_hospital},
        )
    assert topics(app) == before
    app.start_return(patient, national_id=right, name="王秀英", **plan)


def test_who_may_refer_is_decided_before_whether_the_patient_is_contracted(
    app: CareCoordination,
) -> None:
    """Issue #11, F5: another center's uncontracted patient read as contract-not-active."""
    world = build_world(app)
    uncontracted = world.patient()
    ask = {
        "hospital_id": world.hospital,
        "department": "cardiology",
        "reason": "复查",
        "diagnosis": "I10",
        "urgency": "routine",
    }
    with pytest.raises(NotPermitted):
        app.request_referral(uncontracted, actor=world.other_admin, **ask)
    with pytest.raises(ContractNotActive):  # its own center is told
        app.request_referral(uncontracted, actor=world.gp, **ask)


def test_a_booking_names_a_referral_of_its_own_patient_or_none(app: CareCoordination) -> None:
    """Another patient's referral reads as absent (it once answered 422, telling it exists)."""
    world = build_world(app)
    first, second = world.contracted_patient(serial=1), world.contracted_patient(serial=2)
    quota = world.quota()
    rid = world.referral(first)
    for referral in (rid, uuid4()):
        with pytest.raises(NotFound):
            app.book_slot(quota, patient_id=second, actor=world.gp, referral_id=referral)
    assert not app.load(Quota, quota).bookings
    app.book_slot(quota, patient_id=first, actor=world.gp, referral_id=rid)

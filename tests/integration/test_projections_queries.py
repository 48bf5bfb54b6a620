"""Queries over the views: read-your-writes, timelines, worklists, as-of replay and KPIs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.patients import Patient
from jiayi.bootstrap import Projections
from projections.kpis import percentile
from projections.queries import Page, Scope
from tests.conftest import Clock
from tests.world import World

EVERYTHING = Scope(everything=True)


def test_timeline_follows_a_referral_across_organisations(
    world: World, views: Projections, clock: Clock
) -> None:
    app, q = world.app, views.queries
    patient = world.contracted_patient(tags=("hypertension",))
    referral = world.referral(patient, urgency="urgent")
    clock.advance(hours=3)
    outcome = app.accept_referral(referral, actor=world.hospital_staff)
    assert q.wait_for(outcome.position)
    center = Scope(org_id=world.center, org_kind="community_center")
    entries = q.timeline(center, patient)
    assert entries is not None
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "registry.registered"
    assert "contract.signed" in kinds and kinds[-1] == "referral.accepted"
    assert entries[-1]["referral_id"] == str(referral)
    assert entries[-1]["org_name"] == "鼓楼医院"
    only = q.timeline(center, patient, kinds=["referral"])
    assert [e["kind"] for e in only or []] == ["referral.requested", "referral.accepted"]
    hospital = Scope(org_id=world.hospital, org_kind="hospital")
    seen = q.timeline(hospital, patient) or []
    assert {e["kind"] for e in seen} == {"referral.requested", "referral.accepted"}
    other = Scope(org_id=world.other_center, org_kind="community_center")
    assert q.timeline(other, patient) is None
    r = q.referral(center, referral)
    assert r is not None and r["status"] == "accepted"
    assert [s["kind"] for s in r["steps"]] == ["referral.requested", "referral.accepted"]


def test_hospital_worklist_puts_urgent_and_green_channel_first(
    world: World, views: Projections, clock: Clock
) -> None:
    routine = world.referral(world.contracted_patient(serial=1))
    clock.advance(minutes=1)
    poor = world.referral(world.contracted_patient(tags=("registered_poor",), serial=2))
    clock.advance(minutes=1)
    urgent = world.referral(world.contracted_patient(serial=3), urgency="urgent")
    assert views.queries.wait_for(world.app.max_position())
    scope = Scope(org_id=world.hospital, org_kind="hospital")
    got = views.queries.hospital_worklist(scope, world.hospital, Page())
    assert got is not None
    assert [r["id"] for r in got] == [str(urgent), str(poor), str(routine)]
    assert views.queries.hospital_worklist(scope, world.other_hospital, Page()) is None


def test_as_of_replay_shows_a_referral_still_pending(
    world: World, views: Projections, clock: Clock
) -> None:
    app, q = world.app, views.queries
    referral = world.referral()
    assert q.wait_for(app.max_position())
    then = datetime.now(UTC)
    clock.advance(days=1)
    app.accept_referral(referral, actor=world.hospital_staff)
    assert q.wait_for(app.max_position())
    live = q.referral(EVERYTHING, referral)
    past = q.referral(EVERYTHING, referral, as_of=then)
    assert live is not None and live["status"] == "accepted"
    assert past is not None and past["status"] == "requested"
    assert q.hospital_worklist(EVERYTHING, world.hospital, Page()) == []


def test_kpi_formulas_on_a_hand_made_history(
    world: World, views: Projections, clock: Clock
) -> None:
    app, q = world.app, views.queries
    today = world.today
    app.record_residents(
        world.center, total=10, key_population=4, as_of=today, actor=world.center_admin
    )
    # 3 signed of 10 residents; 2 of them key population (65+, diabetes)
    old = world.contracted_patient(serial=1)  # born 1950: aged 65+
    young = world.patient(birth=date(1990, 1, 1), serial=2)
    app.sign_contract(young, team_id=world.team, package="basic", start=today, actor=world.gp)
    diabetic = world.patient(birth=date(1990, 2, 2), tags=("type2_diabetes",), serial=3)
    app.sign_contract(diabetic, team_id=world.team, package="basic", start=today, actor=world.gp)
    # two referrals: decided after 2 h and after 10 h
    r1 = world.referral(old)
    r2 = world.referral(young)
    clock.advance(hours=2)
    app.accept_referral(r1, actor=world.hospital_staff)
    clock.advance(hours=8)
    app.reject_referral(r2, reason_code="no_capacity", actor=world.hospital_staff)
    # r1 comes back and its follow-up is done in time
    app.record_arrival(r1, actor=world.hospital_staff)
    app.return_to_community(
        r1,
        summary="稳定",
        prescriptions=[],
        rehabilitation="随访",
        follow_up_due=today + timedelta(days=5),
        actor=world.hospital_staff,
    )
    clock.advance(days=2)
    app.record_follow_up(old, on=world.today, kind="phone", actor=world.gp)
    # a quota of 4 slots, 2 booked, one attended and one no-show
    quota = world.quota(slots=4, days_ahead=3)
    b1 = app.book_slot(quota, patient_id=old, actor=world.gp).id
    b2 = app.book_slot(quota, patient_id=young, actor=world.gp).id
    clock.advance(days=3)
    app.record_attendance(quota, booking_id=b1, attended=True, actor=world.hospital_staff)
    app.record_attendance(quota, booking_id=b2, attended=False, actor=world.hospital_staff)
    assert q.wait_for(app.max_position())
    end = world.today
    k = q.kpis(EVERYTHING, today, end, center_id=world.center)
    assert k is not None
    assert k["signing_rate"] == pytest.approx(3 / 10)
    assert k["key_population_signing_rate"] == pytest.approx(2 / 4)
    assert k["referral_turnaround_hours"]["median"] == pytest.approx(2.0)
    assert k["referral_turnaround_hours"]["p90"] == pytest.approx(10.0)
    # due in the period: only r1's return follow-up (after-referral ones are due in 14 days,
    # the diabetic's quarterly one in ~90); the phone visit fulfilled it, in time
    assert k["inputs"]["obligations_due"] == 1
    assert k["fulfilment_rate"] == pytest.approx(1.0)
    assert k["inputs"]["returns_due"] == 1
    assert k["loop_closure_rate"] == pytest.approx(1.0)
    assert k["quota_utilisation"] == pytest.approx(2 / 4)
    assert k["no_show_rate"] == pytest.approx(1 / 2)
    other = q.kpis(Scope(org_id=world.other_center, org_kind="community_center"), today, end)
    assert other is not None
    assert other["centers"] == 1 and other["signing_rate"] is None


def test_kpi_periods_are_days_of_the_deployments_zone(
    world: World, views: Projections, clock: Clock
) -> None:
    """A referral requested at 07:30 in Beijing on 2 June is 23:30 UTC on 1 June: it counts in
    June 2's figures, not June 1's."""
    app, q = world.app, views.queries
    patient = world.contracted_patient()
    clock.now = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # 2026-06-02 07:30 in Asia/Shanghai
    referral = world.referral(patient)
    clock.advance(hours=1)
    app.accept_referral(referral, actor=world.hospital_staff)
    assert q.wait_for(app.max_position())

    def decided(day: date) -> int:
        k = q.kpis(EVERYTHING, day, day, center_id=world.center)
        assert k is not None
        count: int = k["referral_turnaround_hours"]["count"]
        return count

    assert (decided(date(2026, 6, 1)), decided(date(2026, 6, 2))) == (0, 1)


def test_a_contract_terminated_early_in_the_morning_ends_on_that_local_day(
    world: World, views: Projections, clock: Clock
) -> None:
    """Terminated at 07:30 in Beijing on 2 June (23:30 UTC on 1 June): still in force on
    1 June, not on 2 June."""
    app, q = world.app, views.queries
    app.record_residents(
        world.center, total=10, key_population=4, as_of=world.today, actor=world.center_admin
    )
    patient = world.contracted_patient()
    contract = app.load(Patient, patient).contract_id
    assert contract is not None
    clock.now = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
    app.terminate_contract(contract, reason="moved to another city", actor=world.gp)
    assert q.wait_for(app.max_position())

    def signed(day: date) -> int:
        k = q.kpis(EVERYTHING, day, day, center_id=world.center)
        assert k is not None
        count: int = k["inputs"]["signed"]
        return count

    assert (signed(date(2026, 6, 1)), signed(date(2026, 6, 2))) == (1, 0)


def test_team_workload_counts_per_team_and_member(world: World, views: Projections) -> None:
    app, q = world.app, views.queries
    patient = world.contracted_patient(tags=("hypertension",))
    world.referral(patient)
    assert q.wait_for(app.max_position())
    scope = Scope(org_id=world.center, org_kind="community_center")
    w = q.team_workload(scope, world.team, world.today)
    assert w is not None
    assert w["active_contracts"] == 1 and w["key_population_contracts"] == 1
    assert w["referrals_awaiting_decision"] == 1
    assert w["follow_ups_due_7_days"] == 0
    gp = next(m for m in w["members"] if m["staff_id"] == "gp-1")
    assert gp["active_contracts"] == 1 and gp["referrals_awaiting_decision"] == 1
    assert (
        q.team_workload(Scope(org_id=world.hospital, org_kind="hospital"), world.team, world.today)
        is None
    )


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([], 0.5) is None


def test_a_transfer_to_another_center_moves_the_patient_in_the_views(
    world: World, views: Projections
) -> None:
    pid = world.contracted_patient(tags=("hypertension",))
    position = world.transfer_to_other_center(pid)
    assert views.queries.wait_for(position, timeout=10)

    old = Scope(org_id=world.center, org_kind="community_center")
    new = Scope(org_id=world.other_center, org_kind="community_center")
    assert views.queries.patient(old, pid) is None
    moved = views.queries.patient(new, pid)
    assert moved is not None and moved["district"] == "江宁区"
    kinds = [e["kind"] for e in views.queries.timeline(new, pid, page=Page(limit=100)) or []]
    assert "registry.transferred" in kinds

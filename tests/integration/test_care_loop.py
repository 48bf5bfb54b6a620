"""Obligations follow their loop, and one definition of "overdue" (issue 16).

The journey the issue tells: an 81-year-old registered-poor resident with type-2 diabetes and
hypertension; the first hospital rejects the referral, the center sends it again to a second,
which accepts, returns the patient, the center acknowledges, and the family doctor visits on
day 10. Then a generated history (seeded) in which workloads, worklists, KPIs and the journey
page's data must all agree with the domain's one definition, incrementally and rebuilt.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from api.web import journey as layout
from api.web.i18n import Labels
from domain.application import CareCoordination
from domain.common import Actor, DomainError
from domain.contracts import Contract
from domain.followups import FollowUps, ReferralAlreadyResent, on_time, overdue
from domain.patients import Patient
from domain.referrals import Referral, ReferralNotEnded, ResentReferralNotFound
from jiayi.bootstrap import Projections
from projections.queries import Page, Scope
from projections.runner import rebuild
from tests.conftest import Clock
from tests.world import World, build_world

EVERYTHING = Scope(everything=True)
ALL = Page(limit=10_000)


def center_scope(world: World) -> Scope:
    return Scope(org_id=world.center, org_kind="community_center")


def refer(world: World, patient: UUID, hospital: UUID, **more: Any) -> UUID:
    return world.app.request_referral(
        patient,
        hospital_id=hospital,
        department="cardiology",
        reason="血糖控制不佳",
        diagnosis="E11.9",
        urgency="routine",
        actor=world.gp,
        **more,
    ).id


def staff_of(world: World, hospital: UUID) -> Actor:
    return world.hospital_staff if hospital == world.hospital else world.other_hospital_staff


def elderly_diabetic(world: World, serial: int = 81) -> UUID:
    return world.contracted_patient(
        tags=("type2_diabetes", "hypertension", "registered_poor"), serial=serial
    )


# --- the journey of the issue ------------------------------------------------------------------


def test_the_day_10_visit_closes_the_loop_of_the_referral_sent_again(
    world: World, views: Projections, clock: Clock
) -> None:
    app, q = world.app, views.queries
    patient = elderly_diabetic(world)
    start = world.today
    first = refer(world, patient, world.hospital)
    clock.advance(hours=4)
    app.reject_referral(first, reason_code="no_capacity", actor=world.hospital_staff)
    clock.advance(hours=2)
    second = refer(world, patient, world.other_hospital, resends=first)
    clock.advance(hours=3)
    h2 = world.other_hospital_staff
    app.accept_referral(second, actor=h2)
    clock.advance(days=1)
    app.record_arrival(second, actor=h2)
    clock.advance(days=5)
    app.return_to_community(
        second,
        summary="血糖平稳出院",
        prescriptions=[{"drug": "二甲双胍"}],
        rehabilitation="饮食控制",
        follow_up_due=start + timedelta(days=20),
        actor=h2,
    )
    clock.advance(hours=20)
    app.acknowledge_return(second, actor=world.gp)
    clock.advance(days=3)
    visit_day = start + timedelta(days=10)
    assert world.today == visit_day
    app.record_follow_up(patient, on=visit_day, kind="face_to_face", actor=world.gp)

    followups = app.load(FollowUps, FollowUps.id_for(patient))
    loop = {o["reason"]: o for o in followups.obligations.values() if o["source_id"] == second}
    ended = [o for o in followups.obligations.values() if o["source_id"] == first]
    # H1's follow-up ended with its rejection; H2's carries on the two weeks from day 0
    assert [o["status"] for o in ended] == ["withdrawn"]
    assert loop["after_referral"]["window_start"] == start
    assert loop["after_referral"]["due"] == start + timedelta(days=14)
    assert loop["after_referral"]["carried_from"] == first
    # the day-10 visit closes H2's loop: both of its follow-ups, and the referral records it
    assert {r: o["status"] for r, o in loop.items()} == {
        "after_referral": "done",
        "return_to_community": "done",
    }
    assert app.load(Referral, second).followed_up_on == visit_day
    assert app.load(Referral, second).resent_from == first
    assert app.load(Referral, first).followed_up_on is None

    # workload, worklist, KPIs and the journey agree: nothing overdue, the loop closed
    assert q.wait_for(app.max_position())
    later = start + timedelta(days=25)
    workload = q.team_workload(center_scope(world), world.team, later)
    assert workload is not None and workload["follow_ups_overdue"] == 0
    work = q.center_worklist(center_scope(world), world.center, later, ALL)
    assert work is not None and work["overdue_follow_ups"] == []
    kpis = q.kpis(EVERYTHING, start, later, center_id=world.center)
    assert kpis is not None
    assert (kpis["inputs"]["returns_due"], kpis["inputs"]["returns_closed"]) == (1, 1)
    listed = q.open_obligations(center_scope(world), patient, later) or []
    assert all(o["source"] == "contract" for o in listed)
    assert not any(o["overdue"] for o in listed)


def test_a_back_dated_visit_is_on_time_everywhere_or_nowhere(
    world: World, views: Projections, clock: Clock
) -> None:
    """The visit's own day counts: written up on day 18 about a visit on day 13, before both
    of the loop's due dates (day 14 after the referral, day 16 after the return), it meets the
    return's follow-up on time in the KPI, and neither the worklist nor the workload lists it
    as overdue (before: it met the follow-up after the referral, the KPI counted the loop
    closed from the referral's date while the return's follow-up stayed open, overdue)."""
    app, q = world.app, views.queries
    patient = elderly_diabetic(world)
    start = world.today
    rid = refer(world, patient, world.hospital)
    app.accept_referral(rid, actor=world.hospital_staff)
    clock.advance(hours=2)
    app.record_arrival(rid, actor=world.hospital_staff)
    clock.advance(days=2)
    app.return_to_community(
        rid,
        summary="出院",
        prescriptions=[],
        rehabilitation="",
        follow_up_due=start + timedelta(days=16),
        actor=world.hospital_staff,
    )
    clock.advance(days=16)
    assert world.today == start + timedelta(days=18)
    app.record_follow_up(patient, on=start + timedelta(days=13), kind="home_visit", actor=world.gp)
    assert q.wait_for(app.max_position())
    today = world.today
    work = q.center_worklist(center_scope(world), world.center, today, ALL)
    assert work is not None
    workload = q.team_workload(center_scope(world), world.team, today)
    assert workload is not None
    kpis = q.kpis(EVERYTHING, start, today, center_id=world.center)
    assert kpis is not None
    assert kpis["loop_closure_rate"] == 1.0
    assert work["overdue_follow_ups"] == []
    assert workload["follow_ups_overdue"] == 0


def test_a_cancelled_referral_ends_its_follow_up_and_a_late_one_is_late_everywhere(
    world: World, views: Projections, clock: Clock
) -> None:
    app, q = world.app, views.queries
    patient = world.contracted_patient(serial=7)
    start = world.today
    cancelled = refer(world, patient, world.hospital)
    clock.advance(hours=1)
    app.cancel_referral(cancelled, reason="症状缓解", actor=world.gp)
    returned = refer(world, world.contracted_patient(serial=8), world.hospital)
    app.accept_referral(returned, actor=world.hospital_staff)
    app.record_arrival(returned, actor=world.hospital_staff)
    clock.advance(days=1)
    app.return_to_community(
        returned,
        summary="出院",
        prescriptions=[],
        rehabilitation="",
        follow_up_due=start + timedelta(days=3),
        actor=world.hospital_staff,
    )
    clock.advance(days=20)
    assert q.wait_for(app.max_position())
    today = world.today
    work = q.center_worklist(center_scope(world), world.center, today, ALL)
    assert work is not None
    overdue_sources = sorted(o["source_id"] for o in work["overdue_follow_ups"])
    # the cancelled referral owes nothing; the returned one's two follow-ups are overdue
    assert overdue_sources == [str(returned), str(returned)]
    workload = q.team_workload(center_scope(world), world.team, today)
    assert workload is not None and workload["follow_ups_overdue"] == 2
    # met late (the visit's day after the due date): not closed in the KPI
    app.record_follow_up(world.app.load(Referral, returned).patient_id, on=today,
                         kind="face_to_face", actor=world.gp)  # fmt: skip
    assert q.wait_for(app.max_position())
    kpis = q.kpis(EVERYTHING, start, today, center_id=world.center)
    assert kpis is not None
    assert (kpis["inputs"]["returns_due"], kpis["inputs"]["returns_closed"]) == (1, 0)
    work = q.center_worklist(center_scope(world), world.center, today, ALL)
    assert work is not None and work["overdue_follow_ups"] == []


# --- sending a referral again: the rules ---------------------------------------------------------


def test_only_an_ended_referral_of_the_same_patient_is_sent_again_and_only_once(
    world: World,
) -> None:
    app = world.app
    patient = elderly_diabetic(world)
    other = world.contracted_patient(serial=5)
    open_one = refer(world, patient, world.hospital)
    with pytest.raises(ReferralNotEnded) as not_ended:
        refer(world, patient, world.other_hospital, resends=open_one)
    assert not_ended.value.code == "referral-not-ended"
    app.reject_referral(open_one, reason_code="no_capacity", actor=world.hospital_staff)
    with pytest.raises(ResentReferralNotFound):
        refer(world, other, world.other_hospital, resends=open_one)
    with pytest.raises(ResentReferralNotFound):
        refer(world, patient, world.other_hospital, resends=UUID(int=42))
    refer(world, patient, world.other_hospital, resends=open_one)
    with pytest.raises(ReferralAlreadyResent) as twice:
        refer(world, patient, world.hospital, resends=open_one)
    assert twice.value.code == "referral-already-resent"


def test_two_concurrent_resends_of_one_referral_make_one(
    make_app: Callable[[], CareCoordination],
) -> None:
    world = build_world(make_app())
    patient = elderly_diabetic(world)
    first = refer(world, patient, world.hospital)
    world.app.reject_referral(first, reason_code="no_capacity", actor=world.hospital_staff)
    apps = [make_app() for _ in range(2)]

    def resend(app: CareCoordination) -> str:
        try:
            app.request_referral(
                patient,
                hospital_id=world.other_hospital,
                department="cardiology",
                reason="再次转诊",
                diagnosis="E11.9",
                urgency="routine",
                actor=world.gp,
                resends=first,
            )
            return "sent"
        except ReferralAlreadyResent:
            return "refused"

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(resend, apps)) == ["refused", "sent"]
    followups = world.app.load(FollowUps, FollowUps.id_for(patient))
    carried = [o for o in followups.obligations.values() if o.get("carried_from") == first]
    assert len(carried) == 1


# --- one definition, a generated history ---------------------------------------------------------


def generate(
    world: World, clock: Clock, seed: int, patients: int = 30, steps: int = 300
) -> list[UUID]:
    """A seeded history: contracts by key population, referrals rejected and re-sent,
    cancelled, returned and acknowledged, returns started by a hospital, visits on time,
    late and back-dated, over about four months."""
    rng = random.Random(seed)
    app = world.app
    tag_sets = [("type2_diabetes",), ("hypertension",), ("severe_mental_disorder",), ()]
    ids = [
        world.contracted_patient(tags=rng.choice(tag_sets), serial=100 + i) for i in range(patients)
    ]

    def visit(pid: UUID) -> None:
        """A visit on the day, or back-dated by up to 10 days (not before the contract)."""
        back = rng.choice((0, 0, 1, 4, 10))
        signed = app.load(Contract, app.load(Patient, pid).contract_id).start
        on = max(world.today - timedelta(days=back), signed)
        kind = rng.choice(("face_to_face", "phone", "home_visit"))
        app.record_follow_up(
            pid, on=on, kind=kind, risk_level=rng.choice((None, "1")), actor=world.gp
        )

    open_up: dict[UUID, UUID] = {}  # patient -> referral in progress
    ended: dict[UUID, UUID] = {}  # patient -> rejected/cancelled referral not yet re-sent
    for _ in range(steps):
        clock.advance(hours=rng.choice((2, 5, 9, 20)))
        pick = rng.random()
        if open_up and pick < 0.4:
            pid = rng.choice(sorted(open_up))
        elif ended and pick < 0.5:
            pid = rng.choice(sorted(ended))
        else:
            pid = rng.choice(ids)
        today = world.today
        try:
            if pid in open_up:
                rid = open_up[pid]
                referral = app.load(Referral, rid)
                staff = staff_of(world, referral.hospital_id)
                step = referral.status
                if step == "requested":
                    if rng.random() < 0.4:
                        app.reject_referral(rid, reason_code="no_capacity", actor=staff)
                        ended[pid] = open_up.pop(pid)
                    elif rng.random() < 0.15:
                        app.cancel_referral(rid, reason="症状缓解", actor=world.gp)
                        ended[pid] = open_up.pop(pid)
                    else:
                        app.accept_referral(rid, actor=staff)
                elif step == "accepted":
                    app.record_arrival(rid, actor=staff)
                elif step in ("arrived", "admitted"):
                    app.return_to_community(
                        rid,
                        summary="出院",
                        prescriptions=[],
                        rehabilitation="",
                        follow_up_due=today + timedelta(days=rng.choice((2, 7, 14))),
                        actor=staff,
                    )
                elif step == "returned" and rng.random() < 0.5:
                    app.acknowledge_return(rid, actor=world.gp)
                else:
                    open_up.pop(pid)
                    visit(pid)
            elif pid in ended and rng.random() < 0.7:
                hospital = rng.choice((world.hospital, world.other_hospital))
                open_up[pid] = refer(world, pid, hospital, resends=ended.pop(pid))
            elif rng.random() < 0.3:
                open_up[pid] = refer(world, pid, rng.choice((world.hospital, world.other_hospital)))
            elif rng.random() < 0.1:
                app.start_return(
                    pid,
                    **world.identity(pid),
                    hospital_id=world.other_hospital,
                    department="cardiology",
                    summary="门诊处理后下转",
                    prescriptions=[],
                    rehabilitation="",
                    follow_up_due=today + timedelta(days=rng.choice((3, 10))),
                    actor=world.other_hospital_staff,
                )
            else:
                visit(pid)
        except DomainError as exc:  # a step the story may not take (e.g. dated before another)
            assert exc.code in ("step-before-predecessor",), exc
    return ids


def domain_answers(world: World, ids: list[UUID], today: date, start: date) -> dict[str, Any]:
    """What the domain's one definition says, from the aggregates themselves."""
    app = world.app
    overdue_ids: set[str] = set()
    due_in_period = done_in_period = returns_due = returns_closed = 0
    period_start = datetime.combine(start, datetime.min.time(), app.timezone)
    period_end = datetime.combine(today + timedelta(days=1), datetime.min.time(), app.timezone)
    per_patient: dict[str, set[str]] = {}
    for pid in ids:
        f = app.load(FollowUps, FollowUps.id_for(pid))
        visits = {v: d["on"] for v, d in f.visits.items()}
        mine = per_patient.setdefault(str(pid), set())
        for o in f.obligations.values():
            done_on = visits.get(o["visit_id"]) if o["visit_id"] else None
            if overdue(o["status"], o["due"], today):
                overdue_ids.add(str(o["id"]))
                mine.add(str(o["id"]))
            if o["status"] != "withdrawn" and start <= o["due"] <= today:
                due_in_period += 1
                done_in_period += o["status"] == "done"
            if o["reason"] == "return_to_community" and o["status"] != "withdrawn":
                returned_at = app.load(Referral, o["source_id"]).returned_at
                assert returned_at is not None
                if period_start <= returned_at < period_end and o["due"] <= today:
                    returns_due += 1
                    returns_closed += on_time(o["status"], o["due"], done_on)
    return {
        "overdue": overdue_ids,
        "per_patient": per_patient,
        "fulfilment": (due_in_period, done_in_period),
        "loop": (returns_due, returns_closed),
    }


def view_answers(
    world: World, views: Projections, ids: list[UUID], today: date, start: date
) -> dict[str, Any]:
    q, scope = views.queries, center_scope(world)
    workload = q.team_workload(scope, world.team, today)
    work = q.center_worklist(scope, world.center, today, ALL)
    kpis = q.kpis(EVERYTHING, start, today, center_id=world.center)
    assert workload is not None and work is not None and kpis is not None
    per_patient: dict[str, set[str]] = {}
    cards: dict[str, bool] = {}
    labels = Labels("en")
    now = datetime.combine(today, datetime.min.time(), world.app.timezone) + timedelta(hours=12)
    for pid in ids:
        listed = q.open_obligations(scope, pid, today) or []
        per_patient[str(pid)] = {o["id"] for o in listed if o["overdue"]}
        # the journey page's own reading of them: a referral's card is overdue when its loop is
        patient = q.patient(scope, pid)
        assert patient is not None
        entries = q.timeline(scope, pid, page=ALL) or []
        referrals = {
            rid: found
            for rid in dict.fromkeys(e["referral_id"] for e in entries if e.get("referral_id"))
            if (found := q.referral(scope, UUID(rid))) is not None
        }
        built = layout.build(patient, entries, referrals, listed, now, labels)
        cards.update({c.id: c.overdue for c in built.referrals})
    inputs = kpis["inputs"]
    return {
        "workload": workload["follow_ups_overdue"],
        "worklist": {o["id"] for o in work["overdue_follow_ups"]},
        "per_patient": per_patient,
        "cards": cards,
        "fulfilment": (inputs["obligations_due"], inputs["obligations_done"]),
        "loop": (inputs["returns_due"], inputs["returns_closed"]),
    }


def test_workload_worklist_kpis_and_pages_agree_with_the_one_definition(
    world: World, views: Projections, clock: Clock
) -> None:
    start = world.today
    ids = generate(world, clock, seed=16)
    app = world.app
    assert views.queries.wait_for(app.max_position(), timeout=30)
    checked = 0
    for today in (world.today, world.today + timedelta(days=9), start + timedelta(days=40)):
        expected = domain_answers(world, ids, today, start)
        found = view_answers(world, views, ids, today, start)
        assert found["workload"] == len(expected["overdue"])
        assert found["worklist"] == expected["overdue"]
        assert found["per_patient"] == expected["per_patient"]
        assert found["fulfilment"] == expected["fulfilment"]
        assert found["loop"] == expected["loop"]
        loops = {o_src for o_src in _overdue_sources(world, ids, today)}
        assert {rid for rid, late in found["cards"].items() if late} == loops
        checked += len(expected["overdue"]) + expected["loop"][0]
    assert checked > 10, "the generated history should owe overdue and returned follow-ups"
    # the same answers from views rebuilt from the log
    incremental = view_answers(world, views, ids, world.today, start)
    assert views.runner is not None
    views.runner.stop()
    store = views.location.open()
    try:
        rebuild(store, views.reader, pace_gc=False)
    finally:
        store.close()
    assert view_answers(world, views, ids, world.today, start) == incremental


def _overdue_sources(world: World, ids: list[UUID], today: date) -> set[str]:
    """Referrals whose loop owes an overdue follow-up (domain definition)."""
    found: set[str] = set()
    for pid in ids:
        f = world.app.load(FollowUps, FollowUps.id_for(pid))
        for o in f.obligations.values():
            if o["reason"] in ("after_referral", "return_to_community") and overdue(
                o["status"], o["due"], today
            ):
                found.add(str(o["source_id"]))
    return found

"""The journey of issue 16 on the aggregates alone: an 81-year-old registered-poor resident
with type-2 diabetes and hypertension is referred up; hospital 1 rejects, the center sends the
referral again to hospital 2 (its follow-up carried on), which accepts; a slot is booked; the
patient is returned with the return form, the return acknowledged, and the family doctor visits
on day 10. The rules that decide which loop the visit closes, and what is overdue, are the
domain's: the answer is the same whichever day it is asked."""

from __future__ import annotations

from datetime import date, timedelta
from uuid import uuid4

from domain.common import Actor, stable_id
from domain.followups import FollowUps, ObligationReason, overdue, single_obligation
from domain.patients import Patient, derived_key_populations
from domain.quotas import Quota
from domain.referrals import FOLLOW_UP_AFTER_REFERRAL, Referral
from tests.unit.story import (
    CENTER,
    GP,
    HOSPITAL,
    HOSPITAL_DESK,
    OTHER_HOSPITAL,
    PATIENT,
    TEAM,
    TODAY,
    at,
)
from tests.world import national_id

H2_DESK = Actor("endo-desk", OTHER_HOSPITAL)
CONTRACT = stable_id("unit", "contract of the story")
BIRTH = date(1945, 4, 20)  # 81 on day 0 (1 June 2026)


def refer(hospital: object, day: date, resends: Referral | None = None) -> Referral:
    return Referral.request(
        uuid4(),
        patient_id=PATIENT,
        contract_id=CONTRACT,
        team_id=TEAM,
        center_id=CENTER,
        hospital_id=hospital,  # type: ignore[arg-type]
        department="endocrinology",
        reason="血糖控制不佳",
        diagnoses=[{"code": "E11.9", "text": "2型糖尿病"}],
        past_history="高血压10年",
        urgency="routine",
        registered_poor=True,
        actor=GP,
        at=at(day, 9),
        team_speaks_for_actor=True,
        resends=resends,
    )


def test_the_day_10_visit_closes_hospital_2s_loop_and_nothing_is_overdue_on_any_day() -> None:
    patient = Patient.register(
        PATIENT,
        name="周桂芳",
        sex="F",
        birth_date=BIRTH,
        national_id=national_id(BIRTH, 681),
        phone="13900001681",
        center_id=CENTER,
        district="鼓楼区",
        actor=GP,
        at=at(TODAY, 8),
    )
    for tag in ("registered_poor", "type2_diabetes", "hypertension"):
        patient.tag(tag, GP, at(TODAY, 8))
    # recorded: the three tags; derived on the day: 65+ (no event says so)
    assert patient.key_populations(TODAY) == {
        "registered_poor",
        "type2_diabetes",
        "hypertension",
        "aged_65_plus",
    }
    assert derived_key_populations(BIRTH, TODAY) == {"aged_65_plus"}

    followups = FollowUps.open(PATIENT, CENTER, GP, at(TODAY, 8))
    first = refer(HOSPITAL, TODAY)
    followups.schedule(
        [single_obligation(ObligationReason.AFTER_REFERRAL, first.id, TODAY, first.follow_up_due)],
        GP,
        at(TODAY, 9),
    )
    first.reject("no_capacity", "", HOSPITAL_DESK, at(TODAY, 11))
    followups.end_loop(first.id, "referral rejected", HOSPITAL_DESK, at(TODAY, 11))

    second = refer(OTHER_HOSPITAL, TODAY, resends=first)
    assert second.follow_up_due == TODAY + FOLLOW_UP_AFTER_REFERRAL  # two weeks from day 0
    followups.carry_on(first.id, second.id, TODAY, second.follow_up_due, GP, at(TODAY, 14))
    second.accept(H2_DESK, at(TODAY, 16))

    quota = Quota.publish(
        uuid4(),
        hospital_id=OTHER_HOSPITAL,
        kind="expert",
        department="endocrinology",
        session_date=TODAY + timedelta(days=2),
        slots=2,
        release_at=at(TODAY + timedelta(days=1), 18),
        actor=H2_DESK,
        at=at(TODAY, 17),
        expert="吴主任",
        half_day="am",
        reserved_for_center=CENTER,
    )
    quota.book(
        uuid4(),
        patient_id=PATIENT,
        referral_id=second.id,
        actor=GP,
        actor_district="鼓楼区",
        at=at(TODAY + timedelta(days=1), 10),
        patient_centers=frozenset({CENTER}),
    )

    day = TODAY + timedelta(days=2)
    second.arrive(H2_DESK, at(day, 9))
    returned_on = TODAY + timedelta(days=6)
    due = TODAY + timedelta(days=10)
    second.return_to_community(
        summary="胰岛素强化治疗后血糖平稳出院",
        prescriptions=[{"drug": "二甲双胍"}],
        rehabilitation="糖尿病饮食",
        follow_up_due=due,
        actor=H2_DESK,
        at=at(returned_on, 10),
    )
    followups.schedule(
        [single_obligation(ObligationReason.RETURN_TO_COMMUNITY, second.id, returned_on, due)],
        H2_DESK,
        at(returned_on, 10),
    )
    second.acknowledge_return(GP, at(returned_on + timedelta(days=1), 9), True)

    visit_day = TODAY + timedelta(days=10)
    met = followups.record_visit(
        uuid4(), visit_day, "face_to_face", {"fasting_glucose": 6.8}, None, "", GP, at(visit_day)
    )
    by_source = {(o["source_id"], o["reason"]): o["status"] for o in followups.obligations.values()}
    # hospital 1's follow-up ended with its rejection; both of hospital 2's are met by the visit
    assert by_source == {
        (first.id, "after_referral"): "withdrawn",
        (second.id, "after_referral"): "done",
        (second.id, "return_to_community"): "done",
    }
    assert len(met) == 2
    # nothing is overdue on the visit's day, nor weeks later: the one definition says so
    for today in (visit_day, visit_day + timedelta(days=30)):
        assert not any(
            overdue(o["status"], o["due"], today) for o in followups.obligations.values()
        )


def test_a_referral_sent_again_after_its_loop_was_followed_up_owes_two_fresh_weeks() -> None:
    first = refer(HOSPITAL, TODAY)
    first.accept(HOSPITAL_DESK, at(TODAY, 10))
    first.record_follow_up(uuid4(), TODAY + timedelta(days=7), GP, at(TODAY + timedelta(days=7)))
    first.cancel("患者改约", GP, at(TODAY + timedelta(days=20)), True)
    again = refer(OTHER_HOSPITAL, TODAY + timedelta(days=21), resends=first)
    assert again.follow_up_due == TODAY + timedelta(days=21) + FOLLOW_UP_AFTER_REFERRAL
    # not yet followed up: the two weeks still count from the first request
    second = refer(HOSPITAL, TODAY)
    second.reject("no_capacity", "", HOSPITAL_DESK, at(TODAY, 11))
    assert refer(OTHER_HOSPITAL, TODAY + timedelta(days=3), resends=second).follow_up_due == (
        TODAY + FOLLOW_UP_AFTER_REFERRAL
    )

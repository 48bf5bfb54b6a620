"""Fulfilment: what a contract owes a patient a year, and the visits that meet it."""

from __future__ import annotations

from collections import Counter
from datetime import date
from itertools import pairwise

import pytest

from domain.common import InvalidValue, NotPermitted, stable_id, term_end
from domain.followups import (
    FaceToFaceRequired,
    FollowUps,
    Obligation,
    ObligationNotOpen,
    ReferralAlreadyResent,
    RiskAssessmentRequired,
    contract_obligations,
    late,
    on_time,
    overdue,
    single_obligation,
)
from tests.unit.story import CENTER, GP, OTHER_CENTER_GP, PATIENT, at, days, recorded

CONTRACT = stable_id("unit", "contract")
START = date(2026, 1, 1)
ONE_YEAR = term_end(START, 1)


def owed(tags: set[str], years: int = 1) -> Counter[str]:
    return Counter(
        o.reason for o in contract_obligations(CONTRACT, tags, START, term_end(START, years))
    )


def test_type_2_diabetes_owes_four_face_to_face_follow_ups_a_year() -> None:
    assert owed({"type2_diabetes"}) == {"type2_diabetes": 4}
    assert owed({"type2_diabetes"}, years=3) == {"type2_diabetes": 12}
    found = contract_obligations(CONTRACT, {"type2_diabetes"}, START, ONE_YEAR)
    assert all(o.face_to_face and not o.risk_assessment for o in found)


def test_severe_mental_disorder_owes_four_a_year_each_with_a_risk_assessment() -> None:
    assert owed({"severe_mental_disorder"}) == {"severe_mental_disorder": 4}
    found = contract_obligations(CONTRACT, {"severe_mental_disorder"}, START, ONE_YEAR)
    assert all(o.risk_assessment for o in found)


@pytest.mark.parametrize("tag", ["hypertension", "tuberculosis"])
def test_other_chronic_disease_owes_one_face_to_face_follow_up_a_year(tag: str) -> None:
    assert owed({tag}) == {"chronic_disease": 1}
    assert owed({tag}, years=2) == {"chronic_disease": 2}


def test_diabetes_with_hypertension_is_followed_four_times_not_five() -> None:
    assert owed({"type2_diabetes", "hypertension"}) == {"type2_diabetes": 4}


def test_tags_without_a_disease_owe_no_scheduled_follow_up() -> None:
    assert owed({"disability", "registered_poor"}) == {}


def test_quarterly_windows_cover_the_term_in_order_and_ids_are_stable() -> None:
    found = contract_obligations(CONTRACT, {"type2_diabetes"}, START, ONE_YEAR)
    assert found[0].window_start == START
    assert all(a.due < b.window_start for a, b in pairwise(found))
    assert all(START <= o.window_start <= o.due <= ONE_YEAR for o in found)
    again = contract_obligations(CONTRACT, {"type2_diabetes"}, START, ONE_YEAR)
    assert [o.id for o in found] == [o.id for o in again]


def stream(*obligations: Obligation) -> FollowUps:
    f = FollowUps.open(PATIENT, CENTER, GP, at(START))
    f.schedule(list(obligations), GP, at(START))
    return f


def diabetes() -> list[Obligation]:
    return contract_obligations(CONTRACT, {"type2_diabetes"}, START, ONE_YEAR)


def test_the_follow_up_stream_records_who_opened_it_and_when() -> None:
    f = FollowUps.open(PATIENT, CENTER, GP, at(START))
    opened = f.collect_events()[0]
    assert (opened.actor, opened.at) == (GP, at(START))  # type: ignore[attr-defined]


def test_scheduling_the_same_obligation_twice_keeps_one() -> None:
    f = stream(*diabetes())
    f.schedule(diabetes(), GP, at(START))
    assert len(f.open_obligations()) == 4
    assert recorded(f) == ["Opened", "Scheduled"]


def test_a_face_to_face_obligation_is_not_met_by_a_phone_call() -> None:
    first = diabetes()[0]
    f = stream(first)
    with pytest.raises(FaceToFaceRequired):
        f.record_visit(
            stable_id("v", 1), START, "phone", {}, None, "", GP, at(START), obligation_id=first.id
        )
    assert f.record_visit(stable_id("v", 2), START, "phone", {}, None, "", GP, at(START)) == []
    home = f.record_visit(
        stable_id("v", 3), START, "home_visit", {"fasting_glucose": 7.2}, None, "", GP, at(START)
    )
    assert home == [first.id]
    assert f.open_obligations() == []


def test_every_severe_mental_disorder_follow_up_carries_a_risk_assessment() -> None:
    first = contract_obligations(CONTRACT, {"severe_mental_disorder"}, START, ONE_YEAR)[0]
    f = stream(first)
    with pytest.raises(RiskAssessmentRequired):
        f.record_visit(
            stable_id("v", 1), START, "phone", {}, None, "", GP, at(START), obligation_id=first.id
        )
    assert f.record_visit(stable_id("v", 2), START, "phone", {}, None, "", GP, at(START)) == []
    assert f.record_visit(stable_id("v", 3), START, "phone", {}, "2", "", GP, at(START)) == [
        first.id
    ]
    with pytest.raises(InvalidValue):
        f.record_visit(stable_id("v", 4), START, "phone", {}, "6", "", GP, at(START))


def test_a_visit_meets_the_earliest_open_obligation_whose_window_has_started() -> None:
    quarters = diabetes()
    f = stream(*reversed(quarters))
    later = quarters[1].window_start
    met = f.record_visit(stable_id("v", 1), later, "face_to_face", {}, None, "", GP, at(later))
    assert met == [quarters[0].id]  # the overdue first quarter is met first
    met = f.record_visit(stable_id("v", 2), later, "face_to_face", {}, None, "", GP, at(later))
    assert met == [quarters[1].id]
    met = f.record_visit(stable_id("v", 3), later, "face_to_face", {}, None, "", GP, at(later))
    assert met == []  # the third quarter has not begun
    with pytest.raises(ObligationNotOpen):
        f.record_visit(
            stable_id("v", 4), later, "face_to_face", {}, None, "", GP, at(later),
            obligation_id=quarters[0].id,
        )  # fmt: skip


def test_after_an_upward_referral_one_follow_up_is_owed_by_its_due_date() -> None:
    referral = stable_id("unit", "referral")
    obligation = single_obligation("after_referral", referral, START, days(14, START))
    f = stream(obligation)
    assert [(o["reason"], o["due"]) for o in f.open_obligations()] == [
        ("after_referral", days(14, START))
    ]
    assert f.record_visit(stable_id("v"), days(3, START), "phone", {}, None, "", GP, at(days(3, START))) == [obligation.id]  # fmt: skip


def test_a_visit_is_recorded_by_the_patients_center_with_plausible_measurements() -> None:
    f = stream()
    visit = stable_id("v")
    with pytest.raises(NotPermitted):
        f.record_visit(visit, START, "face_to_face", {}, None, "", OTHER_CENTER_GP, at(START))
    bad_measurements: list[dict[str, float]] = [{"systolic_bp": 400}, {"mood": 3}]
    for bad in bad_measurements:
        with pytest.raises(InvalidValue):
            f.record_visit(visit, START, "face_to_face", bad, None, "", GP, at(START))
    with pytest.raises(InvalidValue):
        f.record_visit(visit, START, "video", {}, None, "", GP, at(START))
    with pytest.raises(InvalidValue):
        f.record_visit(visit, days(1, START), "phone", {}, None, "", GP, at(START))  # future
    f.record_visit(visit, START, "face_to_face", {"systolic_bp": 150}, None, "", GP, at(START))
    assert f.visits[visit]["kind"] == "face_to_face"
    with pytest.raises(InvalidValue):
        f.record_visit(visit, START, "phone", {}, None, "", GP, at(START))  # same id


def test_an_ended_contract_withdraws_only_obligations_that_had_not_started() -> None:
    quarters = diabetes()
    f = stream(*quarters)
    f.withdraw(CONTRACT, quarters[1].window_start, "contract terminated", GP, at(START))
    assert [o["id"] for o in f.open_obligations()] == [quarters[0].id, quarters[1].id]


# --- obligations follow their loop (issue 16) ----------------------------------------------------

H1_REFERRAL = stable_id("unit", "referral", "H1")
H2_REFERRAL = stable_id("unit", "referral", "H2")


def diabetic_with_a_referral() -> tuple[FollowUps, Obligation]:
    """A diabetic patient's stream: the contract's quarters and the first referral's follow-up
    (due on day 14)."""
    first = single_obligation("after_referral", H1_REFERRAL, START, days(14, START))
    return stream(*diabetes(), first), first


def test_a_rejected_referral_ends_its_follow_up_and_the_one_sent_again_carries_it_on() -> None:
    f, first = diabetic_with_a_referral()
    f.end_loop(H1_REFERRAL, "referral rejected", GP, at(days(1, START)))
    assert f.obligations[first.id]["status"] == "withdrawn"
    carried = f.carry_on(
        H1_REFERRAL, H2_REFERRAL, days(1, START), days(14, START), GP, at(days(1, START))
    )
    assert (carried.window_start, carried.due, carried.source_id) == (
        START,
        days(14, START),
        H2_REFERRAL,
    )
    with pytest.raises(ReferralAlreadyResent):
        f.carry_on(H1_REFERRAL, stable_id("unit", "H3"), START, START, GP, at(START))


def test_a_referral_sent_again_after_its_follow_up_was_done_owes_a_fresh_one() -> None:
    """Accepted, followed up on day 7, cancelled on day 20, sent again on day 21: the new
    referral owes its own follow-up from day 21, not one due on day 14 (overdue at once)."""
    f, first = diabetic_with_a_referral()
    on = days(7, START)
    f.record_visit(stable_id("v7"), on, "phone", {}, None, "", GP, at(on), first.id)
    f.end_loop(H1_REFERRAL, "referral cancelled", GP, at(days(20, START)))
    assert f.obligations[first.id]["status"] == "done"  # what was met stays met
    again = days(21, START)
    carried = f.carry_on(H1_REFERRAL, H2_REFERRAL, again, days(35, START), GP, at(again))
    assert (carried.window_start, carried.due) == (again, days(35, START))
    assert not overdue("open", carried.due, again)


def test_a_visit_prefers_the_referral_loop_over_an_earlier_contract_follow_up() -> None:
    quarters = diabetes()
    loop = single_obligation("after_referral", H2_REFERRAL, days(95, START), days(109, START))
    f = stream(*quarters, loop)
    on = days(100, START)  # the first quarter (due day 90) is overdue, the loop's is not
    met = f.record_visit(stable_id("v"), on, "face_to_face", {}, None, "", GP, at(on))
    assert met == [loop.id]


def test_a_visit_after_the_return_closes_both_follow_ups_of_that_loop_only() -> None:
    f, first = diabetic_with_a_referral()
    f.end_loop(H1_REFERRAL, "referral rejected", GP, at(days(1, START)))
    carried = f.carry_on(
        H1_REFERRAL, H2_REFERRAL, days(1, START), days(14, START), GP, at(days(1, START))
    )
    back = single_obligation("return_to_community", H2_REFERRAL, days(6, START), days(20, START))
    f.schedule([back], GP, at(days(6, START)))
    on = days(10, START)
    # named or not, the visit closes the loop's two follow-ups, and nothing else
    met = f.record_visit(stable_id("v"), on, "face_to_face", {}, None, "", GP, at(on), back.id)
    assert met == [back.id, carried.id]
    assert [o["source_id"] for o in f.open_obligations()] == [CONTRACT] * 4
    assert f.obligations[first.id]["status"] == "withdrawn"


@pytest.mark.parametrize(
    ("status", "due", "today", "expected"),
    [
        ("open", days(9, START), days(10, START), True),
        ("open", days(10, START), days(10, START), False),
        ("done", days(1, START), days(10, START), False),
        ("withdrawn", days(1, START), days(10, START), False),
    ],
)
def test_overdue_means_open_and_due_before_the_day(
    status: str, due: date, today: date, expected: bool
) -> None:
    assert overdue(status, due, today) is expected


def test_a_fulfilled_follow_up_is_late_by_the_visits_own_day() -> None:
    due = days(7, START)
    assert on_time("done", due, days(7, START)) and not late("done", due, days(7, START))
    assert late("done", due, days(8, START)) and not on_time("done", due, days(8, START))
    assert not late("open", due, None) and not on_time("withdrawn", due, None)

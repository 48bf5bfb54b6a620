"""Two-way referrals: up to a hospital department, decided by that hospital, back to the
community with a plan; each step only by the party named."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from domain.common import InvalidValue, NotPermitted, stable_id
from domain.referrals import (
    NotAddressedToYou,
    NotTheSendingCenter,
    Referral,
    ReferralAlreadyAccepted,
    ReferralStepOutOfOrder,
)
from tests.unit.story import (
    CENTER,
    GP,
    HOSPITAL,
    HOSPITAL_DESK,
    OTHER_CENTER_GP,
    OTHER_HOSPITAL_DESK,
    PATIENT,
    TEAM,
    TODAY,
    at,
    days,
    recorded,
)

REFERRAL = stable_id("unit", "referral")
CONTRACT = stable_id("unit", "contract")
VISIT = stable_id("unit", "visit")
PRESCRIPTIONS = [{"drug": "氨氯地平片", "dose": "5mg qd", "days": 30}]


def requested(registered_poor: bool = False, speaks: bool = True) -> Referral:
    return Referral.request(
        REFERRAL,
        patient_id=PATIENT,
        contract_id=CONTRACT,
        team_id=TEAM,
        center_id=CENTER,
        hospital_id=HOSPITAL,
        department="cardiology",
        reason="血压控制不佳",
        diagnosis="I10",
        urgency="urgent",
        registered_poor=registered_poor,
        actor=GP,
        at=at(),
        team_speaks_for_actor=speaks,
    )


def accepted() -> Referral:
    r = requested()
    r.accept(HOSPITAL_DESK, at(hour=11))
    return r


def arrived() -> Referral:
    r = accepted()
    r.arrive(HOSPITAL_DESK, at(days(2)))
    return r


def discharge(r: Referral, due: date = days(20), on: date = days(9)) -> None:
    r.return_to_community("病情稳定", PRESCRIPTIONS, "社区康复", due, HOSPITAL_DESK, at(on))


def test_the_full_journey_up_and_back_to_the_community() -> None:
    r = requested()
    r.accept(HOSPITAL_DESK, at(hour=11))
    r.arrive(HOSPITAL_DESK, at(days(2)))
    r.admit("心内科一病区", HOSPITAL_DESK, at(days(2), 11))
    discharge(r)
    r.acknowledge_return(GP, at(days(10)), team_speaks_for_actor=True)
    r.record_follow_up(VISIT, days(12), GP, at(days(12)))

    assert r.status == "acknowledged"
    assert r.followed_up_on == days(12)
    assert r.return_plan == {
        "summary": "病情稳定",
        "prescriptions": PRESCRIPTIONS,
        "rehabilitation": "社区康复",
        "diagnoses": [],
        "inpatient_number": "",
        "key_results": "",
        "next_plan": "",
    }
    events = r.collect_events()
    assert [type(e).__name__ for e in events] == [
        "Requested",
        "Accepted",
        "PatientArrived",
        "PatientAdmitted",
        "ReturnedToCommunity",
        "ReturnAcknowledged",
        "FollowedUp",
    ]
    who = [e.actor.org_id for e in events]  # type: ignore[attr-defined]
    assert who == [CENTER, HOSPITAL, HOSPITAL, HOSPITAL, HOSPITAL, CENTER, CENTER]
    assert all(e.at.tzinfo is not None for e in events)  # type: ignore[attr-defined]


def test_an_upward_referral_owes_a_follow_up_within_14_days() -> None:
    r = requested()
    assert (r.direction, r.status) == ("up", "requested")
    assert r.follow_up_due == TODAY + timedelta(days=14)


def test_the_green_channel_opens_by_itself_for_registered_poor_patients() -> None:
    assert requested(registered_poor=True).green_channel is True
    assert requested(registered_poor=False).green_channel is False


def test_only_the_patients_contracted_team_or_its_center_refers() -> None:
    with pytest.raises(NotPermitted):
        requested(speaks=False)


def test_a_referral_names_a_reason_a_diagnosis_and_a_known_urgency() -> None:
    def request(reason: str, urgency: str) -> Referral:
        return Referral.request(
            REFERRAL,
            patient_id=PATIENT,
            contract_id=CONTRACT,
            team_id=TEAM,
            center_id=CENTER,
            hospital_id=HOSPITAL,
            department="cardiology",
            reason=reason,
            diagnosis="I10",
            urgency=urgency,
            registered_poor=False,
            actor=GP,
            at=at(),
            team_speaks_for_actor=True,
        )

    with pytest.raises(InvalidValue):
        request("r", "whenever")
    with pytest.raises(InvalidValue):
        request(" ", "routine")


def test_only_the_addressed_hospital_accepts_or_rejects() -> None:
    r = requested()
    with pytest.raises(NotAddressedToYou):
        r.accept(OTHER_HOSPITAL_DESK, at())
    with pytest.raises(NotAddressedToYou):
        r.accept(GP, at())
    with pytest.raises(NotAddressedToYou):
        r.reject("no_capacity", "", OTHER_HOSPITAL_DESK, at())
    assert r.status == "requested"


def test_a_rejection_gives_a_known_reason_code() -> None:
    r = requested()
    with pytest.raises(InvalidValue):
        r.reject("busy", "", HOSPITAL_DESK, at())
    r.reject("wrong_department", "请转内分泌科", HOSPITAL_DESK, at())
    assert r.status == "rejected"
    assert r.collect_events()[-1].reason_code == "wrong_department"  # type: ignore[attr-defined]
    with pytest.raises(ReferralStepOutOfOrder):
        r.accept(HOSPITAL_DESK, at())


def test_an_accepted_referral_cannot_be_rejected_even_later_on() -> None:
    r = accepted()
    with pytest.raises(ReferralAlreadyAccepted):
        r.reject("no_capacity", "", HOSPITAL_DESK, at())
    r.arrive(HOSPITAL_DESK, at(days(1)))
    with pytest.raises(ReferralAlreadyAccepted):
        r.reject("no_capacity", "", HOSPITAL_DESK, at(days(1)))
    with pytest.raises(ReferralStepOutOfOrder):
        r.accept(HOSPITAL_DESK, at(days(1)))


def test_the_sending_center_may_cancel_before_arrival() -> None:
    r = requested()
    r.cancel("患者改约", GP, at(), team_speaks_for_actor=True)
    assert r.status == "cancelled"
    a = accepted()
    a.cancel("患者改约", GP, at(hour=12), team_speaks_for_actor=True)
    assert a.status == "cancelled"


def test_nobody_else_cancels_and_not_after_arrival() -> None:
    with pytest.raises(NotTheSendingCenter):
        requested().cancel("x", OTHER_CENTER_GP, at(), team_speaks_for_actor=False)
    with pytest.raises(NotTheSendingCenter):
        requested().cancel("x", HOSPITAL_DESK, at(), team_speaks_for_actor=False)
    with pytest.raises(ReferralStepOutOfOrder):
        arrived().cancel("too late", GP, at(days(3)), team_speaks_for_actor=True)


def test_the_hospital_steps_follow_in_order() -> None:
    with pytest.raises(ReferralStepOutOfOrder):
        requested().arrive(HOSPITAL_DESK, at())
    with pytest.raises(ReferralStepOutOfOrder):
        accepted().admit("ward", HOSPITAL_DESK, at())
    with pytest.raises(ReferralStepOutOfOrder):
        discharge(accepted())
    with pytest.raises(NotAddressedToYou):
        accepted().arrive(OTHER_HOSPITAL_DESK, at())


def test_a_return_without_admission_sets_its_own_follow_up_due_date() -> None:
    r = arrived()
    discharge(r, due=days(30), on=days(3))
    assert (r.status, r.follow_up_due) == ("returned", days(30))


def test_a_return_needs_a_summary_named_drugs_and_a_due_date_not_before_discharge() -> None:
    r = arrived()
    with pytest.raises(InvalidValue):
        r.return_to_community(" ", [], "", days(20), HOSPITAL_DESK, at(days(3)))
    with pytest.raises(InvalidValue):
        r.return_to_community("ok", [{"dose": "1"}], "", days(20), HOSPITAL_DESK, at(days(3)))
    with pytest.raises(InvalidValue):
        r.return_to_community("ok", [], "", days(2), HOSPITAL_DESK, at(days(3)))
    with pytest.raises(NotAddressedToYou):
        r.return_to_community("ok", [], "", days(20), OTHER_HOSPITAL_DESK, at(days(3)))


def test_a_hospital_may_start_a_return_without_an_upward_referral() -> None:
    r = Referral.start_return(
        REFERRAL,
        patient_id=PATIENT,
        center_id=CENTER,
        hospital_id=HOSPITAL,
        department="orthopedics",
        summary="骨折术后",
        prescriptions=[{"drug": "钙尔奇D"}],
        rehabilitation="康复训练",
        follow_up_due=days(10),
        actor=HOSPITAL_DESK,
        at=at(),
    )
    assert (r.direction, r.status, r.follow_up_due, r.team_id) == (
        "down",
        "returned",
        days(10),
        None,
    )
    assert recorded(r) == ["ReturnStarted"]
    with pytest.raises(NotTheSendingCenter):
        r.acknowledge_return(HOSPITAL_DESK, at(), team_speaks_for_actor=False)
    with pytest.raises(NotTheSendingCenter):
        r.acknowledge_return(OTHER_CENTER_GP, at(), team_speaks_for_actor=False)
    r.acknowledge_return(GP, at(days(1)), team_speaks_for_actor=False)
    assert r.status == "acknowledged"


def test_a_hospital_starts_returns_only_for_itself() -> None:
    with pytest.raises(NotPermitted):
        Referral.start_return(
            REFERRAL,
            patient_id=PATIENT,
            center_id=CENTER,
            hospital_id=HOSPITAL,
            department="x",
            summary="s",
            prescriptions=[],
            rehabilitation="",
            follow_up_due=days(9),
            actor=OTHER_HOSPITAL_DESK,
            at=at(),
        )


def test_the_community_acknowledges_a_return_once_it_happened() -> None:
    r = arrived()
    with pytest.raises(ReferralStepOutOfOrder):
        r.acknowledge_return(GP, at(days(3)), team_speaks_for_actor=True)
    discharge(r)
    with pytest.raises(NotTheSendingCenter):
        r.acknowledge_return(OTHER_CENTER_GP, at(days(10)), team_speaks_for_actor=False)


def test_the_follow_up_is_recorded_by_the_patients_center_and_once() -> None:
    r = requested()
    with pytest.raises(NotTheSendingCenter):
        r.record_follow_up(VISIT, days(5), OTHER_CENTER_GP, at(days(5)))
    r.record_follow_up(VISIT, days(5), GP, at(days(5)))
    r.record_follow_up(stable_id("another visit"), days(8), GP, at(days(8)))
    assert r.followed_up_on == days(5)
    assert recorded(r) == ["Requested", "FollowedUp"]

"""The two-way referral form (双向转诊单) on the referral: the transfer form up (转出单) with
coded diagnoses, the return form (回转单), events recorded before the form, and when the
hospital's decision is due."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from domain.common import InvalidValue
from domain.referrals import Referral, decision_due
from tests.unit.story import CENTER, GP, HOSPITAL, HOSPITAL_DESK, PATIENT, TEAM, at, days
from tests.unit.test_referrals import CONTRACT, PRESCRIPTIONS, REFERRAL

SHANGHAI = ZoneInfo("Asia/Shanghai")


def request(**form: Any) -> Referral:
    values: dict[str, Any] = {
        "reason": "血糖控制不佳，近一月空腹血糖 12 mmol/L",
        "diagnoses": [
            {"code": " e11.65 ", "text": "2型糖尿病伴高血糖"},
            {"code": "I10", "text": "高血压"},
        ],
        "past_history": "高血压10年",
        "treatment": "二甲双胍 0.5g bid",
        "referring_doctor": "李医生",
        "doctor_phone": "025-8326 2000",
        "urgency": "routine",
        **form,
    }
    return Referral.request(
        REFERRAL,
        patient_id=PATIENT,
        contract_id=CONTRACT,
        team_id=TEAM,
        center_id=CENTER,
        hospital_id=HOSPITAL,
        department="endocrinology",
        registered_poor=False,
        actor=GP,
        at=at(),
        team_speaks_for_actor=True,
        **values,
    )


def test_the_transfer_form_is_recorded_with_codes_normalised() -> None:
    r = request()
    assert r.diagnoses == [
        {"code": "E11.65", "text": "2型糖尿病伴高血糖"},
        {"code": "I10", "text": "高血压"},
    ]
    assert (r.past_history, r.treatment) == ("高血压10年", "二甲双胍 0.5g bid")
    assert (r.referring_doctor, r.doctor_phone) == ("李医生", "025-8326 2000")


@pytest.mark.parametrize("code", ["E1", "E119", "11.9", "E11.", "E11.12345", "EE1.9", "E11-9"])
def test_a_code_that_is_no_icd10_code_is_refused_naming_it(code: str) -> None:
    with pytest.raises(InvalidValue) as found:
        request(diagnoses=[{"code": "I10", "text": "高血压"}, {"code": code, "text": "糖尿病"}])
    assert found.value.details["field"] == "diagnoses.1.code"


def test_each_diagnosis_needs_its_text_and_a_referral_at_least_one() -> None:
    with pytest.raises(InvalidValue) as found:
        request(diagnoses=[{"code": "I10", "text": "  "}])
    assert found.value.details["field"] == "diagnoses.0.text"
    with pytest.raises(InvalidValue) as found:
        request(diagnoses=[])
    assert found.value.details["field"] == "diagnoses"


def test_a_free_text_diagnosis_as_before_the_form_is_one_without_a_code() -> None:
    r = request(diagnoses=[], diagnosis=" 高血压 ")
    assert r.diagnoses == [{"code": None, "text": "高血压"}]


@pytest.mark.parametrize("phone", ["call me", "12", "+86 25 8326 2000 ext. 12", "1" * 21])
def test_a_contact_number_is_checked_loosely(phone: str) -> None:
    with pytest.raises(InvalidValue) as found:
        request(doctor_phone=phone)
    assert found.value.details["field"] == "doctor_phone"
    assert request(doctor_phone="+86 (25) 8326-2000").doctor_phone == "+86 (25) 8326-2000"
    assert request(doctor_phone="").doctor_phone == ""


def test_the_return_form_is_recorded_with_the_return() -> None:
    r = request()
    r.accept(HOSPITAL_DESK, at(hour=11))
    r.arrive(HOSPITAL_DESK, at(days(1)))
    r.return_to_community(
        "胰岛素强化治疗后血糖平稳",
        PRESCRIPTIONS,
        "糖尿病饮食，每周测血糖",
        days(20),
        HOSPITAL_DESK,
        at(days(9)),
        diagnoses=[{"code": "e11.9", "text": "2型糖尿病"}],
        inpatient_number=" ZY2026-001234 ",
        key_results="HbA1c 9.1%",
        next_plan="二甲双胍加量，4周后复诊",
    )
    assert r.return_plan is not None
    assert r.return_plan["diagnoses"] == [{"code": "E11.9", "text": "2型糖尿病"}]
    assert r.return_plan["inpatient_number"] == "ZY2026-001234"
    assert r.return_plan["key_results"] == "HbA1c 9.1%"
    assert r.return_plan["next_plan"] == "二甲双胍加量，4周后复诊"
    assert r.return_plan["prescriptions"] == PRESCRIPTIONS


def test_a_return_form_with_a_bad_code_is_refused() -> None:
    r = request()
    r.accept(HOSPITAL_DESK, at(hour=11))
    r.arrive(HOSPITAL_DESK, at(days(1)))
    with pytest.raises(InvalidValue) as found:
        r.return_to_community(
            "出院",
            [],
            "",
            days(20),
            HOSPITAL_DESK,
            at(days(9)),
            diagnoses=[{"code": "diabetes", "text": "2型糖尿病"}],
        )
    assert found.value.details["field"] == "diagnoses.0.code"


def test_a_requested_event_recorded_before_the_form_is_upcast() -> None:
    """Version 1 (before the form): a free-text diagnosis and nothing else of the form."""
    requested_at = datetime(2025, 3, 6, 23, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    state: dict[str, Any] = {
        "direction": "up",
        "reason": "uncontrolled hypertension",
        "diagnosis": "I10 高血压",
        "urgency": "urgent",
        "green_channel": False,
        "return_plan": None,
        "at": requested_at,
    }
    Referral.Requested.upcast_v1_v2(state)
    assert "diagnosis" not in state
    assert state["diagnoses"] == [{"code": None, "text": "I10 高血压"}]
    assert [state[k] for k in ("past_history", "treatment", "referring_doctor")] == ["", "", ""]
    assert state["doctor_phone"] == ""
    # urgent: by the end of the next day, in the zone the request was recorded in
    assert state["decision_due"] == datetime(2025, 3, 8, tzinfo=SHANGHAI)

    returned: dict[str, Any] = {"summary": "出院", "prescriptions": [], "rehabilitation": ""}
    Referral.ReturnedToCommunity.upcast_v1_v2(returned)
    assert returned["diagnoses"] == []
    assert (returned["inpatient_number"], returned["key_results"], returned["next_plan"]) == (
        "",
        "",
        "",
    )
    started: dict[str, Any] = {
        "direction": "down",
        "reason": "",
        "diagnosis": "",
        "urgency": "routine",
        "green_channel": False,
        "return_plan": {"summary": "术后恢复良好", "prescriptions": [], "rehabilitation": ""},
        "at": requested_at,
    }
    Referral.ReturnStarted.upcast_v1_v2(started)
    assert started["diagnoses"] == [] and started["decision_due"] is None
    assert started["return_plan"]["inpatient_number"] == ""


@pytest.mark.parametrize(
    ("urgency", "green", "due"),
    [
        ("emergency", False, datetime(2026, 6, 2, tzinfo=SHANGHAI)),
        ("routine", True, datetime(2026, 6, 2, tzinfo=SHANGHAI)),
        ("urgent", False, datetime(2026, 6, 3, tzinfo=SHANGHAI)),
        ("urgent", True, datetime(2026, 6, 2, tzinfo=SHANGHAI)),
        ("routine", False, datetime(2026, 6, 5, tzinfo=SHANGHAI)),
    ],
)
def test_decision_deadlines_by_urgency_end_with_a_day_of_the_zone(
    urgency: str, green: bool, due: datetime
) -> None:
    # 1 June 23:30 in Shanghai is still 1 June there (15:30 UTC)
    requested = datetime(2026, 6, 1, 15, 30, tzinfo=UTC)
    assert decision_due(requested, urgency, green, SHANGHAI) == due
    assert request(urgency=urgency).decision_due == decision_due(
        at(), urgency, False, at().tzinfo or UTC
    )

"""The two-way referral form across Kafka: partners send the form in (referral.requested v2,
patient.discharged v2; v1 still accepted until its sunset) and the hospital a referral is
addressed to receives the form (Referral.Requested v2), without the contract or team."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from consumers.messages import (
    REFERRAL_FORM_V1_SUNSET,
    MessageRejected,
    decode,
    domain_event,
    outbound_type,
    partner_event,
)
from consumers.routing import apply_cut, route_of
from domain.common import Actor
from domain.referrals import Referral

ORG = UUID("00000000-0000-4000-8000-000000000001")
PATIENT = UUID("00000000-0000-4000-8000-000000000002")
HOSPITAL = UUID("00000000-0000-4000-8000-000000000003")
REFERRAL = UUID("00000000-0000-4000-8000-000000000004")
BEFORE = REFERRAL_FORM_V1_SUNSET - timedelta(days=1)
REQUESTED = "cn.jiayi.partner.referral.requested"
DISCHARGED = "cn.jiayi.partner.patient.discharged"


def referral(**data: Any) -> dict[str, Any]:
    return {
        "patient_id": str(PATIENT),
        "hospital_id": str(HOSPITAL),
        "department": "cardiology",
        "reason": "血压控制不佳",
        "urgency": "urgent",
        **data,
    }


def discharge(**data: Any) -> dict[str, Any]:
    return {
        "referral_id": str(REFERRAL),
        "summary": "血压平稳出院",
        "prescriptions": [{"drug": "氨氯地平", "dose": "5mg"}],
        "follow_up_due": "2026-12-20",
        **data,
    }


def rejected(value: bytes, today: date = BEFORE) -> MessageRejected:
    with pytest.raises(MessageRejected) as caught:
        decode(value, today)
    return caught.value


def test_v2_carries_the_transfer_form_and_v1_is_upcast_to_it() -> None:
    form = {
        "diagnoses": [{"code": "I10", "text": "原发性高血压"}],
        "past_history": "高血压10年",
        "treatment": "氨氯地平",
        "referring_doctor": "李医生",
        "doctor_phone": "025-83262000",
    }
    new = decode(partner_event(f"{REQUESTED}.v2", ORG, "r-1", referral(**form)), BEFORE)
    command: Any = new.command
    assert command.diagnoses == (("I10", "原发性高血压"),)
    assert (command.past_history, command.referring_doctor) == ("高血压10年", "李医生")
    assert new.sunset is None

    old = decode(partner_event(f"{REQUESTED}.v1", ORG, "r-1", referral(diagnosis="I10")), BEFORE)
    command = old.command
    assert command.diagnoses == ((None, "I10"),)
    assert (command.past_history, command.doctor_phone) == ("", "")
    assert old.sunset == REFERRAL_FORM_V1_SUNSET
    on_sunset = rejected(
        partner_event(f"{REQUESTED}.v1", ORG, "r-2", referral(diagnosis="I10")),
        REFERRAL_FORM_V1_SUNSET,
    )
    assert on_sunset.code == "unsupported-version"


@pytest.mark.parametrize(
    "data",
    [
        referral(),  # no diagnoses
        referral(diagnoses=[]),
        referral(diagnoses=[{"code": "hypertension", "text": "高血压"}]),
        referral(diagnoses=[{"code": "I10"}]),
        referral(diagnoses=[{"code": "I10", "text": "高血压"}], diagnosis="I10"),
        referral(diagnoses=[{"code": "I10", "text": "高血压"}], doctor_phone="call the desk"),
    ],
)
def test_a_v2_request_without_a_valid_coded_diagnosis_is_a_schema_violation(
    data: dict[str, Any],
) -> None:
    assert rejected(partner_event(f"{REQUESTED}.v2", ORG, "r-3", data)).code == "schema-violation"


def test_v2_discharge_carries_the_return_form_and_v1_still_works() -> None:
    form = {
        "diagnoses": [{"code": "i10", "text": "原发性高血压2级"}],
        "inpatient_number": "ZY2026-001234",
        "key_results": "24h动态血压 132/84 mmHg",
        "next_plan": "4周后复诊",
        "rehabilitation": "低盐饮食",
    }
    new: Any = decode(partner_event(f"{DISCHARGED}.v2", ORG, "d-1", discharge(**form)), BEFORE)
    assert new.command.diagnoses == (("i10", "原发性高血压2级"),)  # the domain upper-cases it
    assert (new.command.inpatient_number, new.command.next_plan) == ("ZY2026-001234", "4周后复诊")
    old: Any = decode(partner_event(f"{DISCHARGED}.v1", ORG, "d-1", discharge()), BEFORE)
    assert old.command.diagnoses == () and old.command.inpatient_number == ""
    assert old.command.summary == new.command.summary
    missing = rejected(partner_event(f"{DISCHARGED}.v2", ORG, "d-2", discharge()))
    assert missing.code == "schema-violation"


def test_the_hospital_receives_the_form_but_not_the_contract_or_team() -> None:
    at = datetime(2026, 11, 30, 9, tzinfo=UTC)
    r = Referral.request(
        REFERRAL,
        patient_id=PATIENT,
        contract_id=UUID(int=5),
        team_id=UUID(int=6),
        center_id=ORG,
        hospital_id=HOSPITAL,
        department="cardiology",
        reason="血压控制不佳",
        diagnoses=[{"code": "I10", "text": "原发性高血压"}],
        past_history="高血压10年",
        treatment="氨氯地平",
        referring_doctor="李医生",
        doctor_phone="025-83262000",
        urgency="urgent",
        registered_poor=False,
        actor=Actor("gp-1", ORG),
        at=at,
        team_speaks_for_actor=True,
    )
    (event,) = r.collect_events()
    topic = "domain.referrals:Referral.Requested"
    assert outbound_type(topic) == "cn.jiayi.referral.requested.v2"
    cut = route_of("Referral.Requested")["hospital"]
    sent = json.loads(
        domain_event(
            event, topic, 7, "carecoordination", PATIENT, lambda f: apply_cut(f, cut, HOSPITAL)
        )
    )
    data = sent["data"]
    assert data["diagnoses"] == [{"code": "I10", "text": "原发性高血压"}]
    assert (data["past_history"], data["treatment"]) == ("高血压10年", "氨氯地平")
    assert (data["referring_doctor"], data["doctor_phone"]) == ("李医生", "025-83262000")
    assert data["decision_due"] == "2026-12-02T00:00:00+00:00"
    assert (data["contract_id"], data["team_id"]) == (None, None)
    assert sent["dataschema"].endswith("cn.jiayi.referral.requested.v2.json")

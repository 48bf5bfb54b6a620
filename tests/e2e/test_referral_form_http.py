"""The two-way referral form (双向转诊单) through the running API: the center fills the transfer
form, the hospital reads it from its worklist before deciding, returns with the return form;
decision deadlines stand out on the worklist and count in the turnaround KPI."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from tests.e2e.server import HttpWorld, bearer

FORM: dict[str, Any] = {
    "department": "cardiology",
    "reason": "血压控制不佳，头晕一周",
    "diagnoses": [{"code": "i10", "text": "原发性高血压"}, {"code": "E11.9", "text": "2型糖尿病"}],
    "past_history": "高血压10年，糖尿病5年",
    "treatment": "氨氯地平 5mg qd，二甲双胍 0.5g bid",
    "referring_doctor": "李医生",
    "doctor_phone": "025-83262000",
    "urgency": "routine",
}


def refer(world: HttpWorld, patient: UUID, **changes: Any) -> tuple[UUID, int]:
    body = {**FORM, "patient_id": str(patient), "hospital_id": str(world.hospital.id), **changes}
    done = world.ok("/referrals", world.center.token, body)
    return UUID(done["id"]), done["position"]


def read(world: HttpWorld, path: str, token: str, position: int | None = None) -> Any:
    if position is not None:
        path += ("&" if "?" in path else "?") + f"wait_for_position={position}"
    r = world.http.get(path, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def test_the_hospital_reads_the_transfer_form_before_deciding_and_the_return_form_after(
    world: HttpWorld,
) -> None:
    pid, _ = world.contracted()
    rid, position = refer(world, pid)
    h = world.hospital.token
    worklist = read(world, f"/worklists/hospitals/{world.hospital.id}", h, position)["items"]
    assert [r["diagnoses"] for r in worklist if r["id"] == str(rid)] == [
        [{"code": "I10", "text": "原发性高血压"}, {"code": "E11.9", "text": "2型糖尿病"}]
    ]
    # the hospital reads the whole form before it decides
    found = read(world, f"/referrals/{rid}", h)
    form = found["transfer_form"]
    assert form["diagnoses"] == [
        {"code": "I10", "text": "原发性高血压"},
        {"code": "E11.9", "text": "2型糖尿病"},
    ]
    assert form["reason"] == FORM["reason"]
    assert (form["past_history"], form["treatment"]) == (FORM["past_history"], FORM["treatment"])
    assert (form["referring_doctor"], form["doctor_phone"]) == ("李医生", "025-83262000")
    assert found["return_form"] is None
    assert found["decision_overdue"] is False and found["decision_due"]

    world.ok(f"/referrals/{rid}/accept", h, {"note": "请带检查资料"})
    world.ok(f"/referrals/{rid}/arrival", h)
    returned = world.ok(
        f"/referrals/{rid}/return",
        h,
        {
            "summary": "降压调整后血压平稳",
            "prescriptions": [{"drug": "氨氯地平", "dose": "5mg", "frequency": "qd"}],
            "rehabilitation": "低盐饮食，每日测血压",
            "follow_up_due": (world.today + timedelta(days=10)).isoformat(),
            "diagnoses": [{"code": "I10", "text": "原发性高血压2级"}],
            "inpatient_number": "ZY2026-001234",
            "key_results": "24h动态血压 132/84 mmHg",
            "next_plan": "4周后心内科复诊",
        },
    )
    back = read(world, f"/referrals/{rid}", world.center.token, returned["position"])
    assert back["return_form"] == {
        "diagnoses": [{"code": "I10", "text": "原发性高血压2级"}],
        "inpatient_number": "ZY2026-001234",
        "key_results": "24h动态血压 132/84 mmHg",
        "summary": "降压调整后血压平稳",
        "prescriptions": [{"drug": "氨氯地平", "dose": "5mg", "frequency": "qd"}],
        "next_plan": "4周后心内科复诊",
        "rehabilitation": "低盐饮食，每日测血压",
    }


def test_the_worklist_shows_the_diagnoses_and_overdue_decisions_first(world: HttpWorld) -> None:
    c, h = world.center.token, world.hospital.token
    now = datetime.now().astimezone()
    pid, _ = world.contracted()
    old_pid = world.patient()
    # a contract signed two weeks ago, a routine referral six days ago: its decision is late
    world.ok(
        "/contracts",
        c,
        {
            "patient_id": str(old_pid),
            "team_id": str(world.team),
            "package": "basic",
            "start": (world.today - timedelta(days=14)).isoformat(),
            "at": (now - timedelta(days=14)).isoformat(),
        },
    )
    fresh, _ = refer(world, pid)
    late, position = refer(world, old_pid, at=(now - timedelta(days=6)).isoformat())
    rows = read(world, f"/worklists/hospitals/{world.hospital.id}", h, position)["items"]
    assert read(world, f"/referrals/{late}", h)["decision_overdue"] is True
    by_id = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows[:2]] == [str(late), str(fresh)], "overdue first"
    assert by_id[str(late)]["decision_overdue"] is True
    assert by_id[str(fresh)]["decision_overdue"] is False
    assert by_id[str(fresh)]["diagnoses"][0] == {"code": "I10", "text": "原发性高血压"}
    assert by_id[str(fresh)]["decision_due"] > by_id[str(fresh)]["requested_at"]

    # the turnaround KPI counts the late decision, taken now (after its deadline)
    world.ok(f"/referrals/{late}/accept", h)
    position = world.ok(f"/referrals/{fresh}/accept", h)["position"]
    kpis = read(
        world,
        f"/kpis?start={(world.today - timedelta(days=7)).isoformat()}"
        f"&end={world.today.isoformat()}&center_id={world.center.id}",
        c,
        position,
    )
    turnaround = kpis["referral_turnaround_hours"]
    assert turnaround["decisions_overdue"] == 1
    assert turnaround["decisions_overdue_rate"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"diagnoses": [{"code": "diabetes", "text": "2型糖尿病"}]}, "body.diagnoses.0.code"),
        ({"diagnoses": [{"code": "E11.9"}]}, "body.diagnoses.0.text"),
        ({"diagnoses": [{"code": "E11.9", "text": "   "}]}, "body.diagnoses.0.text"),
        ({"diagnoses": []}, "body.diagnoses"),
        ({"doctor_phone": "ring the desk"}, "body.doctor_phone"),
    ],
)
def test_a_bad_form_is_a_422_naming_the_field(
    world: HttpWorld, change: dict[str, Any], field: str
) -> None:
    pid, _ = world.contracted()
    body = {**FORM, "patient_id": str(pid), "hospital_id": str(world.hospital.id), **change}
    r = world.post("/referrals", world.center.token, body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_a_request_as_before_the_form_still_works(world: HttpWorld) -> None:
    """The free-text ``diagnosis`` (deprecated) is recorded as a diagnosis without a code."""
    pid, _ = world.contracted()
    body = {**FORM, "patient_id": str(pid), "hospital_id": str(world.hospital.id)}
    del body["diagnoses"]
    done = world.ok("/referrals", world.center.token, {**body, "diagnosis": "I10"})
    found = read(world, f"/referrals/{done['id']}", world.center.token, done["position"])
    assert found["transfer_form"]["diagnoses"] == [{"code": None, "text": "I10"}]

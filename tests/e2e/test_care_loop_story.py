"""The journey of issue 16 through the running API, as the family doctor lives it: an
81-year-old registered-poor resident with type-2 diabetes and hypertension is referred up with
the two-way referral form; hospital 1 rejects it, the center sends it again to hospital 2,
which reads the form on its worklist and accepts; an expert slot is booked; the patient is
returned to the community with the return form; the center acknowledges, and visits on day 10.

At the end the team workload, the center's worklist, the patient's open follow-ups and the KPIs
agree: nothing overdue, hospital 2's loop closed, and the age-derived key population shown
beside the recorded ones. Each day is recorded as it was lived (``recorded_as_of``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, time, timedelta
from typing import Any

from domain.common import add_years
from tests.e2e.server import HttpWorld, bearer
from tests.world import national_id

FORM = {
    "department": "cardiology",
    "reason": "血糖控制不佳，近1月空腹血糖9-12 mmol/L，伴头晕",
    "diagnoses": [
        {"code": "e11.9", "text": "2型糖尿病"},
        {"code": "I10", "text": "原发性高血压"},
    ],
    "past_history": "高血压10年，糖尿病5年",
    "treatment": "二甲双胍0.5g bid，氨氯地平5mg qd",
    "referring_doctor": "李医生",
    "doctor_phone": "025-83262000",
    "urgency": "routine",
}


def get(world: HttpWorld, path: str, token: str, position: int, **params: Any) -> Any:
    r = world.http.get(
        path, params={"wait_for_position": position, **params}, headers=bearer(token)
    )
    assert r.status_code == 200, (path, r.text)
    return r.json()


def test_reject_resend_accept_book_return_acknowledge_visit_ends_with_one_answer(
    world: HttpWorld,
) -> None:
    app = world.served.services.application()
    zone = app.now().tzinfo
    day0 = world.today - timedelta(days=10)
    c, h1, h2 = world.center.token, world.hospital.token, world.other_hospital.token

    @contextmanager
    def on(day: int, hour: int) -> Iterator[dict[str, str]]:
        """Recorded on ``day`` (since day 0) at ``hour``, as it happened: ``at`` for bodies."""
        moment = datetime.combine(day0 + timedelta(days=day), time(hour), zone)
        with app.recorded_as_of(moment):
            yield {"at": moment.isoformat()}

    # day 0: registered and signed; referred up to hospital 1, rejected, sent to hospital 2
    with on(0, 8) as at:
        birth = add_years(day0, -81) - timedelta(days=40)
        patient = {
            "name": "周桂芳",
            "sex": "F",
            "birth_date": birth.isoformat(),
            "national_id": national_id(birth, 681),
            "phone": "13900001681",
            "tags": ["registered_poor", "type2_diabetes", "hypertension"],
        }
        pid = world.ok("/patients", c, {**patient, **at})["id"]
        contract = {"patient_id": pid, "team_id": str(world.team), "package": "chronic_disease"}
        world.ok("/contracts", c, {**contract, "start": day0.isoformat(), **at})
    with on(0, 9) as at:
        first = world.ok(
            "/referrals",
            c,
            {"patient_id": pid, "hospital_id": str(world.hospital.id), **FORM, **at},
        )["id"]
    with on(0, 11) as at:
        world.ok(f"/referrals/{first}/reject", h1, {"reason_code": "no_capacity", **at})
    with on(0, 14) as at:
        sent = world.ok(
            "/referrals",
            c,
            {
                "patient_id": pid,
                "hospital_id": str(world.other_hospital.id),
                "resends": first,
                **FORM,
                **at,
            },
        )
        second = sent["id"]
    # hospital 2 reads the form before it decides: the worklist row carries the impression,
    # the referral the whole form; the deadline is not passed
    row = get(world, f"/worklists/hospitals/{world.other_hospital.id}", h2, sent["position"])
    [waiting] = [r for r in row["items"] if r["id"] == second]
    assert [d["code"] for d in waiting["diagnoses"]] == ["E11.9", "I10"]
    referral = get(world, f"/referrals/{second}", h2, sent["position"])
    assert referral["transfer_form"]["past_history"] == FORM["past_history"]
    assert referral["transfer_form"]["referring_doctor"] == "李医生"

    with on(0, 16) as at:
        world.ok(f"/referrals/{second}/accept", h2, {"note": "请携带既往病历", **at})
    # day 1: an expert slot of hospital 2 reserved for the center, booked for the referral
    with on(1, 9) as at:
        quota = world.ok(
            "/quotas",
            h2,
            {
                "kind": "expert",
                "department": "cardiology",
                "session_date": (day0 + timedelta(days=2)).isoformat(),
                "half_day": "am",
                "expert": "吴主任",
                "slots": 2,
                "release_at": datetime.combine(
                    day0 + timedelta(days=1), time(18), zone
                ).isoformat(),
                "reserved_for_center": str(world.center.id),
                **at,
            },
        )["id"]
    with on(1, 10) as at:
        world.ok(f"/quotas/{quota}/bookings", c, {"patient_id": pid, "referral_id": second, **at})
    # day 2: seen by the expert, admitted; day 6: returned with the return form
    with on(2, 9) as at:
        world.ok(f"/referrals/{second}/arrival", h2, at)
    with on(2, 11) as at:
        world.ok(f"/referrals/{second}/admission", h2, {"ward": "内分泌科二病区", **at})
    with on(6, 10) as at:
        world.ok(
            f"/referrals/{second}/return",
            h2,
            {
                "summary": "胰岛素强化治疗后血糖平稳出院",
                "prescriptions": [{"drug": "二甲双胍", "dose": "0.5g", "frequency": "bid"}],
                "rehabilitation": "糖尿病饮食，每日监测血糖",
                "follow_up_due": (day0 + timedelta(days=10)).isoformat(),
                "diagnoses": [{"code": "E11.65", "text": "2型糖尿病伴高血糖"}],
                "inpatient_number": "ZY2026-004321",
                "key_results": "HbA1c 9.1%",
                "next_plan": "继续口服降糖药，4周后复诊",
                **at,
            },
        )
    with on(7, 9) as at:
        world.ok(f"/referrals/{second}/acknowledge", c, at)
    # day 10: the family doctor's visit; it names no obligation: it is the follow-up of the
    # loop in progress (hospital 2's), not of the rejected referral
    with on(10, 0) as at:
        visit = world.ok(
            f"/patients/{pid}/follow-ups",
            c,
            {
                "on": (day0 + timedelta(days=10)).isoformat(),
                "kind": "face_to_face",
                "measurements": {"fasting_glucose": 6.8, "systolic_bp": 134},
                **at,
            },
        )
    position = visit["position"]

    # hospital 2's loop is closed, on the visit's day; hospital 1's was never owed a visit
    closed = get(world, f"/referrals/{second}", c, position)
    assert closed["followed_up_on"] == (day0 + timedelta(days=10)).isoformat()
    assert get(world, f"/referrals/{first}", c, position)["followed_up_on"] is None

    # one answer everywhere: nothing overdue, today and a week on
    workload = get(world, f"/teams/{world.team}/workload", c, position)
    work = get(world, f"/worklists/centers/{world.center.id}", c, position)
    owed = get(world, f"/patients/{pid}/obligations", c, position)
    assert workload["follow_ups_overdue"] == 0
    assert work["overdue_follow_ups"] == [] and work["returns_awaiting_acknowledgement"] == []
    assert not any(o["overdue"] for o in owed)
    assert not any(o["source"] == "referral" for o in owed)  # both loop follow-ups met
    assert all(o["reason"] == "type2_diabetes" for o in owed)  # the contract's quarterly ones
    assert (
        get(world, f"/worklists/hospitals/{world.other_hospital.id}", h2, position)["items"] == []
    )
    kpis = get(
        world,
        "/kpis",
        c,
        position,
        start=day0.isoformat(),
        end=world.today.isoformat(),
        center_id=str(world.center.id),
    )
    assert kpis["loop_closure_rate"] == 1.0
    assert kpis["referral_turnaround_hours"]["decisions_overdue"] == 0

    # the key populations: the recorded ones, and 65+ from the birth date
    found = get(world, f"/patients/{pid}", c, position)
    assert found["tags"] == ["hypertension", "registered_poor", "type2_diabetes"]
    assert found["derived_tags"] == ["aged_65_plus"]

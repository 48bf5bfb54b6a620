"""Through the running API: a rejected referral sent again (``resends``), the patient's open
follow-ups listed (``GET /patients/{id}/obligations``) and one of them named by a visit."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tests.e2e.server import HttpWorld, bearer


def refer(world: HttpWorld, patient: UUID, hospital: UUID, **more: Any) -> Any:
    body = {
        "patient_id": str(patient),
        "hospital_id": str(hospital),
        "department": "cardiology",
        "reason": "血糖控制不佳",
        "diagnosis": "E11.9",
        **more,
    }
    return world.post("/referrals", world.center.token, body)


def obligations(world: HttpWorld, patient: UUID, token: str, position: int) -> Any:
    return world.http.get(
        f"/patients/{patient}/obligations",
        params={"wait_for_position": position},
        headers=bearer(token),
    )


def test_a_rejected_referral_sent_again_carries_its_follow_up_which_a_visit_names(
    world: HttpWorld,
) -> None:
    c = world.center.token
    pid, _ = world.contracted()
    first = refer(world, pid, world.hospital.id).json()["id"]
    world.ok(f"/referrals/{first}/reject", world.hospital.token, {"reason_code": "no_capacity"})
    again = refer(world, pid, world.other_hospital.id, resends=first)
    assert again.status_code == 201, again.text
    second = again.json()["id"]

    r = obligations(world, pid, c, again.json()["position"])
    assert r.status_code == 200, r.text
    loop = [o for o in r.json() if o["source"] == "referral"]
    assert [(o["source_id"], o["reason"], o["overdue"]) for o in loop] == [
        (second, "after_referral", False)
    ]
    # the second hospital sees its own referral's loop; the first, and another center, nothing
    r = obligations(world, pid, world.other_hospital.token, again.json()["position"])
    assert [o["source_id"] for o in r.json()] == [second]
    assert obligations(world, pid, world.other_center.token, 0).status_code == 404

    visit = world.ok(
        f"/patients/{pid}/follow-ups",
        c,
        {"on": world.today.isoformat(), "kind": "phone", "obligation_id": loop[0]["id"]},
    )
    r = obligations(world, pid, c, visit["position"])
    assert [o for o in r.json() if o["source"] == "referral"] == []

    # sent again once only; an open referral is not sent again; an unknown one reads as absent
    twice = refer(world, pid, world.hospital.id, resends=first)
    assert (twice.status_code, twice.json()["code"]) == (409, "referral-already-resent")
    not_ended = refer(world, pid, world.hospital.id, resends=second)
    assert (not_ended.status_code, not_ended.json()["code"]) == (409, "referral-not-ended")
    other, _ = world.contracted()
    absent = refer(world, other, world.hospital.id, resends=first)
    assert (absent.status_code, absent.json()["code"]) == (404, "not-found")

"""A patient's whole journey through the running API: sign, refer up, accept, book an expert
slot, arrive, return to community, acknowledge, follow up; then the broken rules' codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from tests.e2e.server import HttpWorld, bearer


@dataclass
class Journey:
    patient: UUID
    contract: UUID
    referral: UUID
    positions: list[int]


def full_journey(world: HttpWorld) -> Journey:
    """Sign, refer up, accept, book an expert slot, arrive, return, acknowledge, follow up."""
    c, h = world.center.token, world.hospital.token
    pid, contract = world.contracted()
    rid = world.referral(pid)
    positions = []

    accepted = world.ok(f"/referrals/{rid}/accept", h, {"note": "请携带资料"})
    assert accepted["id"] == str(rid)
    positions.append(accepted["position"])

    quota = world.quota(slots=3)
    booking = world.ok(
        f"/quotas/{quota}/bookings", c, {"patient_id": str(pid), "referral_id": str(rid)}
    )
    positions.append(booking["position"])

    positions.append(world.ok(f"/referrals/{rid}/arrival", h)["position"])
    due = (world.today + timedelta(days=7)).isoformat()
    returned = world.ok(
        f"/referrals/{rid}/return",
        h,
        {
            "summary": "血压控制平稳出院",
            "prescriptions": [{"drug": "氨氯地平", "dose": "5mg", "frequency": "qd"}],
            "rehabilitation": "低盐饮食",
            "follow_up_due": due,
        },
    )
    positions.append(returned["position"])
    positions.append(world.ok(f"/referrals/{rid}/acknowledge", c)["position"])
    visit = world.ok(
        f"/patients/{pid}/follow-ups",
        c,
        {
            "on": world.today.isoformat(),
            "kind": "face_to_face",
            "measurements": {"systolic_bp": 132, "diastolic_bp": 84},
        },
    )
    positions.append(visit["position"])
    return Journey(pid, contract, rid, positions)


def test_the_full_journey_records_each_step_in_order(world: HttpWorld) -> None:
    journey = full_journey(world)
    positions, rid = journey.positions, journey.referral
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    # Each write recorded the actor from the token, and the steps in the log are the journey's.
    app = world.served.services.application()
    events = [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=10_000)
    ]
    steps = [type(e).__qualname__ for e in events if e.originator_id == rid]
    assert steps == [
        "Referral.Requested",
        "Referral.Accepted",
        "Referral.PatientArrived",
        "Referral.ReturnedToCommunity",
        "Referral.ReturnAcknowledged",
        "Referral.FollowedUp",
    ]
    accepted_event = next(e for e in events if type(e).__qualname__ == "Referral.Accepted")
    assert accepted_event.actor.org_id == world.hospital.id  # type: ignore[attr-defined]
    assert accepted_event.actor.staff_id == "鼓楼医院-desk"  # type: ignore[attr-defined]
    assert journey.contract


def test_broken_rules_answer_409_with_their_stable_codes(world: HttpWorld) -> None:
    c, h = world.center.token, world.hospital.token
    pid, _ = world.contracted()
    rid = world.referral(pid)
    world.ok(f"/referrals/{rid}/accept", h)
    r = world.post(f"/referrals/{rid}/reject", h, {"reason_code": "no_capacity"})
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "referral-already-accepted"

    r = world.post(
        "/contracts",
        c,
        {
            "patient_id": str(pid),
            "team_id": str(world.team),
            "package": "basic",
            "start": world.today.isoformat(),
        },
    )
    assert (r.status_code, r.json()["code"]) == (409, "contract-already-active")

    quota = world.quota(slots=1)
    world.ok(f"/quotas/{quota}/bookings", c, {"patient_id": str(pid)})
    other, _ = world.contracted()
    r = world.post(f"/quotas/{quota}/bookings", c, {"patient_id": str(other)})
    assert (r.status_code, r.json()["code"]) == (409, "quota-full")


def test_read_back_from_timeline_and_workload(world: HttpWorld) -> None:
    """After the journey the views show it: the timeline in order with the acting
    organisations, the team's workload, and both worklists."""
    c, h = world.center.token, world.hospital.token
    journey = full_journey(world)
    last = journey.positions[-1]

    r = world.http.get(
        f"/patients/{journey.patient}/timeline",
        params={"wait_for_position": last},
        headers=bearer(c),
    )
    assert r.status_code == 200, r.text
    entries = r.json()["items"]
    steps = [
        (e["kind"], e["org_id"])
        for e in entries
        if e["kind"].split(".")[0] in ("referral", "return", "booking")
    ]
    center, hospital = str(world.center.id), str(world.hospital.id)
    assert steps == [
        ("referral.requested", center),
        ("referral.accepted", hospital),
        ("booking.booked", center),
        ("referral.arrived", hospital),
        ("return.returned", hospital),
        ("return.acknowledged", center),
    ]
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "registry.registered" and "contract.signed" in kinds
    assert kinds.index("follow_up.visit") > kinds.index("return.acknowledged")
    visit = next(e for e in entries if e["kind"] == "follow_up.visit")
    assert visit["org_id"] == center
    assert all(e["org_id"] for e in entries), "every entry names the acting organisation"

    r = world.http.get(f"/teams/{world.team}/workload", headers=bearer(c))
    assert r.status_code == 200, r.text
    workload = r.json()
    assert workload["active_contracts"] == 1
    assert workload["follow_ups_completed_this_month"] == 1
    assert workload["returns_awaiting_acknowledgement"] == 0

    r = world.http.get(f"/worklists/centers/{world.center.id}", headers=bearer(c))
    assert r.status_code == 200, r.text
    returns = r.json()["returns_awaiting_acknowledgement"]
    assert str(journey.referral) not in [x["id"] for x in returns]

    # A fresh routine referral, then an urgent one: the hospital sees the urgent one first.
    def refer(urgency: str) -> dict[str, Any]:
        patient, _ = world.contracted()
        body = {
            "patient_id": str(patient),
            "hospital_id": hospital,
            "department": "cardiology",
            "reason": "复查",
            "diagnosis": "I10",
            "urgency": urgency,
        }
        return world.ok("/referrals", c, body)

    routine = refer("routine")
    urgent = refer("urgent")
    pos = urgent["position"]
    r = world.http.get(
        f"/worklists/hospitals/{world.hospital.id}",
        params={"wait_for_position": pos},
        headers=bearer(h),
    )
    assert r.status_code == 200, r.text
    pending = [x["id"] for x in r.json()["items"]]
    assert pending == [urgent["id"], routine["id"]]

"""A patient's whole journey through the running API: sign, refer up, accept, book an expert
slot, arrive, return to community, acknowledge, follow up; then the broken rules' codes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.e2e.server import HttpWorld, bearer


def test_the_full_journey_records_each_step_in_order(world: HttpWorld) -> None:
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
    assert contract


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
    """Waits for the projections: skipped while the read side is not wired into the API."""
    pid, _ = world.contracted()
    rid = world.referral(pid)
    pos = world.ok(f"/referrals/{rid}/accept", world.hospital.token)["position"]
    r = world.http.get(
        f"/patients/{pid}/timeline",
        params={"wait_for_position": pos},
        headers=bearer(world.center.token),
    )
    if r.status_code == 503 and r.json()["code"] == "read-side-unavailable":
        pytest.skip("read side (projections) not wired into the API yet")
    assert r.status_code == 200, r.text
    kinds = [e["kind"] for e in r.json()["items"]]
    assert kinds, "the timeline shows the journey"
    r = world.http.get(
        f"/teams/{world.team}/workload",
        params={"wait_for_position": pos},
        headers=bearer(world.center.token),
    )
    assert r.status_code == 200, r.text

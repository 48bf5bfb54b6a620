"""Issue #11 from outside: which organisation may change a patient, and that nothing answers
differently for an absent id and one outside the caller's relations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.server import HttpWorld, bearer
from tests.world import national_id


def _referral_body(patient: object, hospital: object) -> dict[str, Any]:
    return {
        "patient_id": str(patient),
        "hospital_id": str(hospital),
        "department": "cardiology",
        "reason": "复查",
        "diagnosis": "I10",
    }


def _plan(world: HttpWorld) -> dict[str, Any]:
    return {
        "department": "cardiology",
        "summary": "急诊收治后病情稳定",
        "prescriptions": [{"drug": "阿司匹林"}],
        "follow_up_due": (world.today + timedelta(days=10)).isoformat(),
    }


def test_absent_and_foreign_ids_answer_commands_with_the_same_bytes(world: HttpWorld) -> None:
    """F5: commands answered "no patient <id>" for an absent id and another text for another
    organisation's; a referral for another center's patient answered 409."""
    own_pid, _ = world.contracted()
    foreign_pid, foreign_cid = world.contracted(world.other_center)
    uncontracted = world.patient(world.other_center)
    foreign_rid = world.ok(
        "/referrals",
        world.other_center.token,
        _referral_body(foreign_pid, world.other_hospital.id),
    )["id"]
    own_quota = world.quota()
    foreign_quota = world.quota(center=world.other_center)
    foreign_booking = world.ok(
        f"/quotas/{foreign_quota}/bookings",
        world.other_center.token,
        {"patient_id": str(foreign_pid)},
    )["id"]
    c, h = world.center.token, world.hospital.token
    today = world.today.isoformat()
    absent = str(uuid.uuid4())

    # (token, path template, body template, the foreign value); {x} is the id compared
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        (c, "/patients/{x}/tags", {"tag": "hypertension"}, str(foreign_pid)),
        (c, "/patients/{x}/follow-ups", {"on": today, "kind": "phone"}, str(foreign_pid)),
        (c, "/patients/{x}/move-away", {"destination": "上海市"}, str(foreign_pid)),
        (c, "/patients/{x}/transfer/release", {}, str(foreign_pid)),
        (c, "/patients/{x}/transfer/decline", {"reason": "x"}, str(foreign_pid)),
        (c, "/patients/{x}/transfer/withdraw", {}, str(foreign_pid)),
        (c, "/contracts/{x}/renew", {"years": 1}, str(foreign_cid)),
        (
            c,
            "/contracts/{x}/change-team",
            {"team_id": str(world.team), "reason": "就近"},
            str(foreign_cid),
        ),
        (c, "/contracts/{x}/terminate", {"reason": "迁出"}, str(foreign_cid)),
        (c, "/referrals", _referral_body("{x}", world.hospital.id), str(foreign_pid)),
        (c, "/referrals", _referral_body("{x}", world.hospital.id), str(uncontracted)),
        (c, "/referrals/{x}/cancel", {"reason": "x"}, foreign_rid),
        (c, "/referrals/{x}/acknowledge", {}, foreign_rid),
        (h, "/referrals/{x}/accept", {}, foreign_rid),
        (c, f"/quotas/{own_quota}/bookings", {"patient_id": "{x}"}, str(foreign_pid)),
        (c, "/quotas/{x}/bookings", {"patient_id": str(own_pid)}, str(foreign_quota)),
        (c, f"/quotas/{foreign_quota}/bookings/{{x}}/cancel", {"reason": "x"}, foreign_booking),
    ]
    wrong: list[str] = []
    reference: bytes | None = None
    for token, path, body, foreign in cases:
        answers = []
        for x in (absent, foreign):
            filled = {
                k: (v.replace("{x}", x) if isinstance(v, str) else v) for k, v in body.items()
            }
            r = world.http.post(path.replace("{x}", x), json=filled, headers=bearer(token))
            answers.append(r)
        a, f = answers
        if (a.status_code, f.status_code) != (404, 404) or a.content != f.content:
            wrong.append(f"{path}: {a.status_code} {a.text} / {f.status_code} {f.text}")
        reference = reference or a.content
        if a.content != reference:
            wrong.append(f"{path}: another 404 body {a.text}")
    assert not wrong, "\n".join(wrong)
    problem = httpx.Response(404, content=reference).json()
    assert problem == {
        "type": "/problems/not-found",
        "title": "Not Found",
        "status": 404,
        "code": "not-found",
        "detail": "nothing with that id is visible to you",
    }


def test_a_return_names_the_patient_as_the_encounter_did(world: HttpWorld) -> None:
    """F1: POST /referrals/returns accepted any patient_id, and the made-up return opened that
    patient's data to the hospital."""
    foreign = world.patient(world.other_center)
    nid, name = world.identities[foreign]
    plan = _plan(world)
    h = world.hospital.token

    r = world.post("/referrals/returns", h, {**plan, "patient_id": str(foreign)})
    assert r.status_code == 422, r.text  # a patient is not named by a bare id any more
    wrong_name = world.post("/referrals/returns", h, {**plan, "national_id": nid, "name": "王秀"})
    unknown = world.post(
        "/referrals/returns",
        h,
        {**plan, "national_id": national_id(datetime(1931, 1, 1).date(), 7), "name": name},
    )
    assert (wrong_name.status_code, unknown.status_code) == (404, 404)
    assert wrong_name.content == unknown.content
    made = world.ok("/referrals/returns", h, {**plan, "national_id": nid, "name": name})
    r = world.http.get(
        f"/referrals/{made['id']}",
        params={"wait_for_position": made["position"]},
        headers=bearer(h),
    )
    assert r.status_code == 200, r.text


def test_a_patient_moves_to_another_center_only_when_both_centers_agree(
    world: HttpWorld,
) -> None:
    """F2: a center of another district moved a patient of this one to its own team."""
    pid, cid = world.contracted()
    move = {"team_id": str(world.other_team), "reason": "就近"}
    r = world.post(f"/contracts/{cid}/change-team", world.other_center.token, move)
    assert (r.status_code, r.json()["code"]) == (404, "not-found"), r.text
    r = world.post(f"/contracts/{cid}/change-team", world.center.token, move)
    assert (r.status_code, r.json()["code"]) == (409, "transfer-required"), r.text

    ask = {**world.named(pid), "team_id": str(world.other_team), "consent": "转签同意书 0042"}
    world.ok("/transfers", world.other_center.token, ask)
    r = world.post("/transfers", world.other_center.token, ask)
    assert (r.status_code, r.json()["code"]) == (409, "transfer-already-requested"), r.text
    r = world.post(f"/patients/{pid}/transfer/release", world.other_center.token)
    assert r.status_code == 404, r.text  # the requester does not release
    world.ok(f"/patients/{pid}/transfer/withdraw", world.other_center.token)
    world.ok("/transfers", world.other_center.token, ask)
    world.ok(f"/patients/{pid}/transfer/decline", world.center.token, {"reason": "治疗中"})
    world.ok("/transfers", world.other_center.token, ask)
    done = world.ok(f"/patients/{pid}/transfer/release", world.center.token)

    wait = {"wait_for_position": done["position"]}
    r = world.http.get(f"/patients/{pid}", params=wait, headers=bearer(world.other_center.token))
    assert r.status_code == 200, r.text
    assert r.json()["center_id"] == str(world.other_center.id)
    r = world.post(f"/contracts/{cid}/renew", world.center.token, {"years": 1})
    assert r.status_code == 404, r.text  # no longer the old center's contract
    r = world.post(f"/contracts/{cid}/renew", world.other_center.token, {"years": 1})
    assert r.status_code == 200, r.text


def test_a_transfer_request_dated_in_the_future_is_refused(world: HttpWorld) -> None:
    pid = world.patient()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ask = {**world.named(pid), "team_id": str(world.other_team), "consent": "同意书"}
    r = world.post("/transfers", world.other_center.token, {**ask, "at": later})
    assert (r.status_code, r.json()["field"]) == (422, "body.at"), r.text

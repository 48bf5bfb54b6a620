"""Findings of an outside review, over HTTP: what an organisation kept or could list beyond
its care relationships (the access matrix itself: tests/integration/test_care_relations.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.e2e.server import HttpWorld, bearer


def get(world: HttpWorld, path: str, token: str, **params: Any) -> httpx.Response:
    return world.http.get(path, params=params, headers=bearer(token))


def search(world: HttpWorld, token: str, q: str, **params: Any) -> httpx.Response:
    """Patient search: the term in the body, never in the URL."""
    return world.http.post("/patients/search", json={"q": q}, params=params, headers=bearer(token))


def test_a_hospital_that_rejected_a_referral_keeps_only_that_referral(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    rid = world.referral(pid)
    hospital = world.hospital.token
    for _ in range(100):  # the views follow the log within moments
        if get(world, f"/referrals/{rid}", world.center.token).status_code == 200:
            break
        time.sleep(0.05)
    assert get(world, f"/patients/{pid}", hospital).status_code == 200
    rejected = world.ok(f"/referrals/{rid}/reject", hospital, {"reason_code": "no_capacity"})
    last = rejected["position"]

    assert get(world, f"/patients/{pid}", hospital, wait_for_position=last).status_code == 404
    found = search(world, hospital, "王秀英", wait_for_position=last)
    assert found.status_code == 200 and found.json()["items"] == []
    referral = get(world, f"/referrals/{rid}", hospital, wait_for_position=last)
    assert referral.status_code == 200
    assert [s["kind"] for s in referral.json()["steps"]] == [
        "referral.requested",
        "referral.rejected",
    ]
    # the center's own reading is untouched
    assert get(world, f"/patients/{pid}", world.center.token).status_code == 200


def test_search_needs_a_real_term_and_takes_wildcards_literally(world: HttpWorld) -> None:
    pid = world.patient()
    token = world.center.token
    tagged = world.ok(f"/patients/{pid}/tags", token, {"tag": "type2_diabetes"})
    assert get(world, f"/patients/{pid}", token, wait_for_position=tagged["position"]).is_success
    for term in ("%", "_", "王"):
        r = search(world, token, term)
        assert r.status_code == 422, (term, r.text)
    for term in ("%%", "__", "王%", "%秀%"):
        r = search(world, token, term)
        assert r.status_code == 200 and r.json()["items"] == [], term
    r = search(world, token, "秀英")
    assert [p["id"] for p in r.json()["items"]] == [str(pid)]

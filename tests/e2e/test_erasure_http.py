"""An administrator erases a patient over HTTP; from then on every reader finds the person
erased (issue #14)."""

from __future__ import annotations

from tests.e2e.server import HttpWorld, bearer


def test_an_administrator_erases_a_patient_and_readers_find_them_erased(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    nid, name = world.identities[pid]
    center = bearer(world.center.token)
    # only administrators erase; a reason is required
    r = world.http.post(f"/patients/{pid}/erasure", json={"reason": "错误建档"}, headers=center)
    assert r.status_code == 403
    r = world.http.post(f"/patients/{pid}/erasure", json={}, headers=bearer(world.admin))
    assert r.status_code == 422 and "reason" in r.text
    r = world.http.post(
        f"/patients/{pid}/erasure", json={"reason": "错误建档"}, headers=bearer(world.admin)
    )
    assert r.status_code == 200, r.text
    wait = {"wait_for_position": r.json()["position"]}
    entry = world.http.get(f"/patients/{pid}", params=wait, headers=center).json()
    assert entry["erased"] is True and entry["name"] == "[erased]"
    assert name not in world.http.get(f"/patients/{pid}/timeline", headers=center).text
    for term in (name, nid, str(pid)):
        found = world.http.post("/patients/search", json={"q": term}, headers=center)
        assert found.status_code == 200 and found.json()["items"] == []
    # nothing more is recorded of the person: answered as for an unknown patient
    r = world.http.post(f"/patients/{pid}/tags", json={"tag": "tuberculosis"}, headers=center)
    assert r.status_code == 404
    # an unknown patient cannot be erased either
    r = world.http.post(
        f"/patients/{world.center.id}/erasure", json={"reason": "x"}, headers=bearer(world.admin)
    )
    assert r.status_code == 404

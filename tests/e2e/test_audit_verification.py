"""Auditors see the last verification of the log against its chain and start a bounded one."""

from __future__ import annotations

import time
from typing import Any

from audit import seals as sealing
from eventstore.recorders import tables
from jiayi.settings import Settings
from tests.e2e.server import HttpWorld, bearer


def finished(world: HttpWorld) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        r = world.http.get("/audit/verification", headers=bearer(world.auditor))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if not body["running"] and body["last"] is not None:
            return body
        assert time.monotonic() < deadline, "the verification did not finish"
        time.sleep(0.1)


def test_only_auditors_verify(world: HttpWorld) -> None:
    for token in (world.center.token, world.hospital.token, world.coordinator, world.admin):
        assert world.http.get("/audit/verification", headers=bearer(token)).status_code == 403
        assert world.post("/audit/verification", token).status_code == 403


def test_an_auditor_starts_a_bounded_verification_and_reads_its_findings(
    world: HttpWorld, settings: Settings
) -> None:
    world.patient()
    r = world.post("/audit/verification", world.auditor, {"after": 0, "limit": 1000})
    assert r.status_code == 202, r.text
    last = finished(world)["last"]
    assert last["ok"] is True and last["findings"] == []
    assert last["events"] == world.served.services.application().max_position() > 0

    # someone edits a stored event directly in the database
    store = sealing.open_store(settings)
    names = tables(store.postgres)
    try:
        row = store.one(f"SELECT state FROM {names.events} WHERE {names.position} = 3")
        assert row is not None
        state = bytearray(bytes(row["state"]))
        state[-2] ^= 0x01
        store.execute(
            f"UPDATE {names.events} SET state = ? WHERE {names.position} = 3", (bytes(state),)
        )
    finally:
        store.close()
    assert world.post("/audit/verification", world.auditor).status_code == 202
    last = finished(world)["last"]
    assert last["ok"] is False
    assert [(f["position"], f["kind"]) for f in last["findings"]] == [(3, "changed")]
    assert last["requested_by"]


def test_a_bound_beyond_the_limit_is_refused(world: HttpWorld) -> None:
    r = world.post("/audit/verification", world.auditor, {"limit": 10_000_000})
    assert r.status_code == 422 and "limit" in r.text

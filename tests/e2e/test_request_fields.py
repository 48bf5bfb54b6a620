"""A refused request names the request's own field, always: the field it sent under the name
it used (``body.on``, not the domain's ``date``), and a KPI period whose last day comes before
its first is refused rather than answered with nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import httpx

from tests.e2e.server import HttpWorld, bearer


def refused(r: httpx.Response, code: str, field: str) -> None:
    assert r.status_code == 422, r.text
    problem = r.json()
    assert (problem["code"], problem["field"]) == (code, field), problem


def test_domain_refusals_name_the_fields_the_request_sent(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    tomorrow = (world.today + timedelta(days=1)).isoformat()
    visits = f"/patients/{pid}/follow-ups"
    # a visit dated after the moment it is recorded: the request's field is `on`
    late = {"on": tomorrow, "kind": "face_to_face"}
    refused(world.post(visits, world.center.token, late), "invalid-value", "body.on")
    # a visit id already used: the request's field is `id`
    visit = {"on": world.today.isoformat(), "kind": "phone", "id": str(uuid.uuid4())}
    world.ok(visits, world.center.token, visit)
    refused(world.post(visits, world.center.token, visit), "invalid-value", "body.id")

    # a quota reserved for nobody: the request has reserved_for_center/_district, no reserved_for
    quota = {
        "kind": "expert",
        "department": "cardiology",
        "session_date": (world.today + timedelta(days=3)).isoformat(),
        "half_day": "am",
        "slots": 2,
        "release_at": (datetime.now().astimezone() + timedelta(days=1)).isoformat(),
    }
    r = world.post("/quotas", world.hospital.token, quota)
    refused(r, "invalid-value", "body.reserved_for_center")
    assert "reserved_for_district" in r.json()["detail"]

    # a key population larger than the total names the key population
    residents = {"total": 100, "key_population": 101, "as_of": world.today.isoformat()}
    r = world.post(f"/organisations/{world.center.id}/residents", world.center.token, residents)
    refused(r, "invalid-value", "body.key_population")

    # a whitespace-only diagnosis names the diagnosis
    referral = {
        "patient_id": str(pid),
        "hospital_id": str(world.hospital.id),
        "department": "cardiology",
        "reason": "血压控制不佳",
        "diagnosis": "   ",
    }
    r = world.post("/referrals", world.center.token, referral)
    assert r.status_code == 422 and r.json()["field"] == "body.diagnosis", r.text

    # one renewal too many: years
    _, cid = world.contracted()
    r = world.post(f"/contracts/{cid}/renew", world.center.token, {"years": 3})
    refused(r, "renewal-too-long", "body.years")


def test_an_inverted_kpi_period_is_refused_naming_its_end(world: HttpWorld) -> None:
    day = world.today
    params = {"start": day.isoformat(), "end": (day - timedelta(days=1)).isoformat()}
    r = world.http.get("/kpis", params=params, headers=bearer(world.center.token))
    refused(r, "invalid-value", "query.end")
    assert str(day) in r.json()["detail"]
    one_day = {"start": day.isoformat(), "end": day.isoformat()}  # both days included
    assert world.http.get("/kpis", params=one_day, headers=bearer(world.center.token)).is_success

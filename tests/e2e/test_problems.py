"""Problem details (401/403/404/422), token revocation, and Idempotency-Key replays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.e2e.server import HttpWorld, bearer


def test_problem_shapes(world: HttpWorld) -> None:
    r = world.http.post("/teams", json={"name": "x"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "unauthenticated"

    r = world.http.post("/teams", json={"name": "x"}, headers=bearer("jy_nope_nope"))
    assert (r.status_code, r.json()["code"]) == (401, "invalid-token")

    r = world.post("/teams", world.auditor, {"name": "x"})
    assert (r.status_code, r.json()["code"]) == (403, "role-not-allowed")

    r = world.post(f"/referrals/{uuid.uuid4()}/accept", world.hospital.token)
    assert (r.status_code, r.json()["code"]) == (404, "not-found")

    r = world.post("/quotas", world.hospital.token, {"kind": "expert", "slots": 0})
    problem = r.json()
    assert r.status_code == 422 and problem["code"] == "validation-failed"
    assert problem["field"].startswith("body.")
    assert {"body.slots", "body.department"} <= {e["field"] for e in problem["errors"]}

    r = world.post(f"/contracts/{uuid.uuid4()}/renew", world.center.token, {"years": 5})
    assert (r.status_code, r.json()["field"]) == (422, "body.years")

    r = world.http.get("/nowhere")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem")


def test_a_revoked_token_is_refused(world: HttpWorld) -> None:
    from api.tokens import Role

    token, principal = world.served.services.tokens.issue("temp", Role.AUDITOR)
    assert world.post("/teams", token, {"name": "x"}).status_code == 403
    assert world.served.services.tokens.revoke(principal.token_id)
    assert world.post("/teams", token, {"name": "x"}).status_code == 401


def test_a_retried_command_returns_the_first_answer(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    rid = world.referral(pid)
    headers = bearer(world.hospital.token, **{"Idempotency-Key": "accept-" + str(rid)})
    first = world.http.post(f"/referrals/{rid}/accept", json={}, headers=headers)
    again = world.http.post(f"/referrals/{rid}/accept", json={}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    # without the key, the second accept is a broken rule
    plain = world.post(f"/referrals/{rid}/accept", world.hospital.token)
    assert (plain.status_code, plain.json()["code"]) == (409, "referral-step-out-of-order")


def test_a_created_thing_is_created_once_and_a_reused_key_is_refused(world: HttpWorld) -> None:
    headers = bearer(world.center.token, **{"Idempotency-Key": "team-once"})
    first = world.http.post("/teams", json={"name": "团队三"}, headers=headers)
    again = world.http.post("/teams", json={"name": "团队三"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = world.http.post("/teams", json={"name": "团队四"}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency-key-reused")
    # the same key from another caller is another request
    mine = world.http.post(
        "/teams",
        json={"name": "团队三"},
        headers=bearer(world.other_center.token, **{"Idempotency-Key": "team-once"}),
    )
    assert mine.status_code == 201 and mine.json()["id"] != first.json()["id"]


def test_a_refused_command_is_replayed_as_refused(world: HttpWorld) -> None:
    headers = bearer(world.auditor, **{"Idempotency-Key": "k-403"})
    r1 = world.http.post("/teams", json={"name": "x"}, headers=headers)
    r2 = world.http.post("/teams", json={"name": "x"}, headers=headers)
    assert r1.status_code == r2.status_code == 403
    bad = world.http.post(
        "/teams",
        json={"name": "x"},
        headers=bearer(world.auditor, **{"Idempotency-Key": "has space"}),
    )
    assert bad.status_code in (400, 422)


def test_moments_and_days_out_of_range_are_refused_naming_the_parameter(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    timeline = f"/patients/{pid}/timeline"
    for name in ("since", "until", "as_of"):
        for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
            r = world.http.get(timeline, params={name: moment}, headers=bearer(world.auditor))
            assert (r.status_code, r.json()["field"]) == (422, f"query.{name}"), r.text
    fine = {
        "since": "2026-01-01T00:00:00+08:00",
        "wait_for_position": world.served.services.application().max_position(),
    }
    r = world.http.get(timeline, params=fine, headers=bearer(world.auditor))
    assert r.status_code == 200, r.text
    places = (f"/teams/{world.team}/workload", f"/worklists/centers/{world.center.id}")
    for path in places:
        for day in ("0001-01-01", "9999-12-31"):
            r = world.http.get(path, params={"today": day}, headers=bearer(world.center.token))
            assert (r.status_code, r.json()["field"]) == (422, "query.today"), r.text
        r = world.http.get(path, params={"today": "2026-06-01"}, headers=bearer(world.center.token))
        assert r.status_code == 200, r.text


def test_as_of_a_moment_still_to_come_is_refused(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    position = world.served.services.application().max_position()
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    for path in (f"/patients/{pid}", f"/patients/{pid}/timeline", f"/teams/{world.team}/workload"):
        r = world.http.get(path, params={"as_of": later}, headers=bearer(world.auditor))
        problem = r.json()
        assert r.status_code == 422, r.text
        assert (problem["code"], problem["field"]) == ("as-of-in-the-future", "query.as_of")
    # the present is fine (and shows what is recorded by now)
    now = {"as_of": datetime.now(UTC).isoformat(), "wait_for_position": position}
    r = world.http.get(f"/patients/{pid}", params=now, headers=bearer(world.auditor))
    assert r.status_code == 200, r.text


def test_a_claim_abandoned_by_a_crash_is_taken_over_and_old_answers_expire(
    world: HttpWorld,
) -> None:
    from api.idempotency import KEEP, STALE_CLAIM, request_digest
    from api.tokens import token_hash

    body = b'{"name":"\\u56e2\\u961f\\u4e94"}'
    headers = bearer(world.center.token, **{"Idempotency-Key": "crashed"})
    headers["Content-Type"] = "application/json"
    store = world.served.services.idempotency
    principal = token_hash(world.center.token)
    digest = request_digest(world.center.token, "POST", "/teams", "", body)
    # a server claimed the key, then died before answering
    assert store.claim(principal, "crashed", "POST", "/teams", digest) is None
    r = world.http.post("/teams", content=body, headers=headers)
    assert (r.status_code, r.json()["code"]) == (409, "idempotency-request-in-progress")

    def age(key: str, by: timedelta) -> None:
        with store.store.cursor() as cur:
            then = (datetime.now(UTC) - by).isoformat(timespec="microseconds")
            cur.execute(
                "UPDATE api_idempotency SET created_at = ? WHERE principal = ? AND idem_key = ?",
                (then, principal, key),
            )

    age("crashed", STALE_CLAIM + timedelta(seconds=1))
    # another request with the key is still refused; the same request takes the claim over
    other = world.http.post("/teams", json={"name": "别的"}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency-key-reused")
    first = world.http.post("/teams", content=body, headers=headers)
    assert first.status_code == 201, first.text
    again = world.http.post("/teams", content=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    # a day later the answer is gone: the key is free again
    age("crashed", KEEP + timedelta(seconds=1))
    assert store.claim(principal, "another", "POST", "/teams", digest) is None
    with store.store.cursor() as cur:
        cur.execute("SELECT idem_key FROM api_idempotency WHERE principal = ?", (principal,))
        assert [row[0] for row in cur.fetchall()] == ["another"]

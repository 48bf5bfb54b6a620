"""Every answer names its request (``X-Request-ID``), and the events a request caused carry the
same id (issue 17): an operator follows one request from the client's log through the API's log
lines to the stored events."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any
from uuid import UUID

import httpx

from tests.e2e.server import HttpWorld, bearer
from tests.world import national_id

FRESH = re.compile(r"[0-9a-f]{32}")


def stored_events(world: HttpWorld, aggregate: UUID) -> list[Any]:
    """The aggregate's events as stored (read back from the event store)."""
    app = world.served.services.application()
    return list(app.repository.event_store.get(aggregate))


def test_the_request_id_sent_comes_back_and_is_recorded_in_the_events_it_caused(
    world: HttpWorld,
) -> None:
    sent = "5b0f2a3e-8c1d-4e6f-9a7b-2c3d4e5f6a7b"
    birth = date(1961, 2, 3)
    body = {
        "name": "赵请求",
        "sex": "M",
        "birth_date": birth.isoformat(),
        "national_id": national_id(birth, 777),
        "phone": "13900000001",
        "tags": [],
    }
    r = world.http.post(
        "/patients", json=body, headers=bearer(world.center.token, **{"X-Request-ID": sent})
    )
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-ID"] == sent
    events = stored_events(world, UUID(r.json()["id"]))
    assert [e.actor.request_id for e in events] == [sent]

    # a request that did not send one gets a fresh id, recorded likewise
    again = world.http.post(
        f"/patients/{r.json()['id']}/tags",
        json={"tag": "type2_diabetes"},
        headers=bearer(world.center.token),
    )
    assert again.status_code == 200, again.text
    fresh = again.headers["X-Request-ID"]
    assert FRESH.fullmatch(fresh)
    events = stored_events(world, UUID(r.json()["id"]))
    assert [e.actor.request_id for e in events] == [sent, fresh]


def test_requests_without_an_id_get_a_new_one_each(http: httpx.Client) -> None:
    ids = [http.get("/health").headers["X-Request-ID"] for _ in range(3)]
    assert all(FRESH.fullmatch(i) for i in ids)
    assert len(set(ids)) == 3


def test_an_invalid_request_id_is_replaced_never_echoed(http: httpx.Client) -> None:
    for invalid in (
        "",
        "has space",
        "x" * 129,
        "<script>",
        "ü-nicode",
        "a/b",
        "a;b=c",
        "lb-7f3a.2026:req_1-x",
        "search-11010519491231002X",  # personal data must not reach the events
        "13900000001",
    ):
        answered = http.get("/health", headers={"X-Request-ID": invalid.encode()}).headers
        assert answered["X-Request-ID"] != invalid
        assert FRESH.fullmatch(answered["X-Request-ID"]), invalid
    for proxy in ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"):
        assert http.get("/health", headers={"X-Request-ID": proxy}).headers["X-Request-ID"] == (
            proxy
        )


def test_every_answer_carries_the_id_problems_pages_and_refused_bodies_included(
    world: HttpWorld,
) -> None:
    http = world.http
    answers = {
        "401 no token": http.get("/patients/" + str(UUID(int=1))),
        "404 not visible": http.get(
            "/patients/" + str(UUID(int=1)), headers=bearer(world.center.token)
        ),
        "422 invalid body": http.post(
            "/patients", json={"name": 1}, headers=bearer(world.center.token)
        ),
        "404 no route": http.get("/no/such/route"),
        "413 body too large": http.post(
            "/patients",
            content=b"x" * (2 * 1024 * 1024),
            headers=bearer(world.center.token, **{"Content-Type": "application/json"}),
        ),
        "page": http.get("/ui"),
    }
    for what, answer in answers.items():
        rid = uuid.uuid4().hex
        assert FRESH.fullmatch(answer.headers.get("X-Request-ID", "")), what
        # and the id sent is the one answered
        again = http.request(
            answer.request.method,
            str(answer.request.url),
            content=answer.request.content,
            headers={**answer.request.headers, "X-Request-ID": rid},
        )
        assert again.status_code == answer.status_code, what
        assert again.headers.get("X-Request-ID") == rid, what

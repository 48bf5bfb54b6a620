"""Key populations as a reader sees them: the recorded ones (``tags``) and the ones the birth
date puts a patient in on the day (``derived_tags``: aged 65+, children 0-6), in the API and on
the pages; the derived ones change with the calendar, with no event."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

import httpx

from domain.common import add_years
from tests.e2e.server import HttpWorld, bearer
from tests.world import national_id


def register(world: HttpWorld, birth: date, tags: list[str], at: datetime) -> UUID:
    world.serial[0] += 1
    body = {
        "name": "赵桂兰",
        "sex": "F",
        "birth_date": birth.isoformat(),
        "national_id": national_id(birth, world.serial[0]),
        "phone": "13900000000",
        "tags": tags,
        "at": at.isoformat(),
    }
    return UUID(world.ok("/patients", world.center.token, body)["id"])


def read(world: HttpWorld, pid: UUID, token: str, **params: str) -> dict[str, object]:
    r = world.http.get(f"/patients/{pid}", params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    found: dict[str, object] = r.json()
    return found


def test_the_65th_birthday_adds_the_derived_key_population_without_any_event(
    world: HttpWorld,
) -> None:
    zone = world.served.services.application().now().tzinfo
    today = world.today
    # registered 30 days ago (back-dated); the 65th birthday was 10 days ago; nothing
    # recorded about the patient since then
    birth = add_years(today - timedelta(days=10), -65)
    registered = datetime.combine(today - timedelta(days=30), time(9), zone)
    pid = register(world, birth, ["registered_poor", "type2_diabetes"], registered)
    position = world.served.services.application().max_position()

    now = read(world, pid, world.center.token, wait_for_position=str(position))
    assert now["tags"] == ["registered_poor", "type2_diabetes"]  # as recorded
    assert now["derived_tags"] == ["aged_65_plus"]
    assert now["key_populations"] == ["aged_65_plus", "registered_poor", "type2_diabetes"]

    # nothing is recorded as the days pass: read on the eve of the birthday, the patient is 64
    queries = world.served.services.queries
    assert queries is not None
    eve = datetime.combine(today - timedelta(days=11), time(12), zone)
    queries.clock = lambda: eve
    try:
        then = read(world, pid, world.center.token)
    finally:
        queries.clock = lambda: datetime.now(UTC)
    assert then["tags"] == ["registered_poor", "type2_diabetes"]
    assert then["derived_tags"] == []
    assert read(world, pid, world.center.token)["derived_tags"] == ["aged_65_plus"]


def test_a_child_is_0_to_6_and_the_journey_page_shows_both_kinds(world: HttpWorld) -> None:
    zone = world.served.services.application().now().tzinfo
    child = register(
        world,
        world.today - timedelta(days=400),
        ["disability"],
        datetime.combine(world.today, time(0, 5), zone),
    )
    position = world.served.services.application().max_position()
    found = read(world, child, world.center.token, wait_for_position=str(position))
    assert (found["tags"], found["derived_tags"]) == (["disability"], ["child_0_6"])

    with httpx.Client(base_url=str(world.http.base_url), timeout=30) as pages:
        sign_in = pages.get("/ui/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', sign_in.text)
        assert csrf is not None, sign_in.text
        r = pages.post("/ui/sign-in", data={"csrf": csrf.group(1), "token": world.center.token})
        assert r.status_code == 303, r.text
        page = pages.get(f"/ui/patients/{child}")
    assert page.status_code == 200, page.text
    badges = re.findall(r'<span class="badge tag( derived)?" data-tag="([a-z0-9_]+)"', page.text)
    assert badges == [("", "disability"), (" derived", "child_0_6")]

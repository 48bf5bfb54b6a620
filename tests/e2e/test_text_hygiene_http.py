"""Control characters are refused wherever text enters over HTTP (issue 15): the JSON API
answers 422 naming the field, the pages a 422 page; nothing is recorded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jiayi.settings import Settings
from tests.e2e.pages_world import PagesWorld, serve_world
from tests.e2e.server import bearer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PagesWorld]:
    data = Path(tmp_path_factory.mktemp("hygiene")) / "data"
    w = serve_world(Settings(data_dir=data, postgres_url=None, ui_language="en"))
    yield w
    w.stop()


def api(world: PagesWorld, who: str) -> httpx.Client:
    return httpx.Client(base_url=world.url, timeout=30, headers=bearer(world.tokens[who]))


@pytest.mark.parametrize("character", ["\x00", "\x1e", "\x1f", "\x7f", "\x9b"])
def test_a_control_character_in_a_body_is_a_422_naming_the_field(
    world: PagesWorld, character: str
) -> None:
    before = world.app.max_position()
    with api(world, "center") as http:
        r = http.post("/teams", json={"name": f"家庭医生团队{character}二"})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["field"] == "body.name"
    assert problem["errors"][0]["type"] == "control_character"
    assert f"U+{ord(character):04X} at position 6" in problem["errors"][0]["message"]
    assert world.app.max_position() == before  # nothing recorded


def test_nested_fields_query_and_path_parameters_are_checked_too(world: PagesWorld) -> None:
    with api(world, "hospital") as http:
        r = http.post(
            f"/referrals/{world.pending_referral}/return",
            json={
                "summary": "稳定",
                "follow_up_due": "2030-01-01",
                "prescriptions": [{"drug": "阿司匹林\x00"}],
            },
        )
        assert r.status_code == 422 and r.json()["field"] == "body.prescriptions.0.drug", r.text
    with api(world, "coordinator") as http:
        r = http.get(
            "/kpis", params={"start": "2026-01-01", "end": "2026-02-01", "district": "鼓\x00"}
        )
        assert r.status_code == 422 and r.json()["field"] == "query.district", r.text
    with api(world, "center") as http:
        r = http.post(f"/teams/{world.team}/members/gp%00x/remove", json={})
        assert r.status_code == 422 and r.json()["field"] == "path.staff_id", r.text
        # tab, line feed and carriage return are ordinary text
        r = http.post("/teams", json={"name": "团队\t三\r\n"})
        assert r.status_code == 201, r.text


def signed_in(world: PagesWorld, who: str) -> tuple[httpx.Client, str]:
    http = httpx.Client(base_url=world.url, timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', http.get("/ui/sign-in").text)
    assert token
    r = http.post("/ui/sign-in", data={"csrf": token.group(1), "token": world.tokens[who]})
    assert r.status_code == 303, r.text
    page = http.get("/ui/worklists/hospital" if who == "hospital" else "/ui/patients")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text
    return http, token.group(1)


def test_a_page_form_or_query_with_a_control_character_is_a_422_page(world: PagesWorld) -> None:
    before = world.app.max_position()
    http, csrf = signed_in(world, "hospital")
    try:
        r = http.post(
            f"/ui/referrals/{world.pending_referral}/accept",
            data={"csrf": csrf, "note": "请携带\x00资料"},
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert "form.note" in r.text and "U+0000" in r.text
        assert world.app.max_position() == before  # not accepted
        r = http.get("/ui/worklists/hospital", params={"done": "x\x1fy"})
        assert r.status_code == 422 and "query.done" in r.text
        r = http.get("/ui/worklists/hospital", params={"done": "accepted"})
        assert r.status_code == 200
    finally:
        http.close()

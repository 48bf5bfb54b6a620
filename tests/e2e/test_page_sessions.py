"""The pages' sign-in is a server-side session (issue 15): the cookie held the raw API token and
never expired, and the form token was not tied to the session.

A server of its own (no read side: the pages used here need none), with short session times.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from api.main import create_app
from api.tokens import Role
from jiayi.settings import Settings
from tests.e2e.server import Served

IDLE, LIFETIME = 2, 5


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = Path(tmp_path_factory.mktemp("sessions")) / "data"
    settings = Settings(
        data_dir=data, postgres_url=None, ui_session_idle=IDLE, ui_session_lifetime=LIFETIME
    )
    server = Served(create_app(settings)).start()
    yield server
    server.stop()


def nurse(served: Served) -> str:
    return served.token(Role.CENTER_STAFF, uuid4(), "鼓楼区", staff="nurse-1")


def form_token(http: httpx.Client, page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', http.get(page).text)
    assert found
    return found.group(1)


def sign_in(served: Served, token: str) -> tuple[httpx.Client, httpx.Response]:
    http = httpx.Client(base_url=served.url, timeout=30)
    r = http.post("/ui/sign-in", data={"csrf": form_token(http, "/ui/sign-in"), "token": token})
    assert r.status_code == 303, r.text
    return http, r


def signed_in(http: httpx.Client) -> bool:
    r = http.get("/ui/patients")
    assert r.status_code in (200, 303), r.status_code
    return r.status_code == 200


def test_the_cookie_holds_a_random_session_id_never_the_token(served: Served) -> None:
    token = nurse(served)
    http, r = sign_in(served, token)
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("jiayi_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert f"Max-Age={LIFETIME}" in cookie
    value = http.cookies["jiayi_session"]
    token_id, secret = token.split("_")[1], token.split("_", 2)[2]
    assert value != token and token_id not in value and secret not in value
    assert len(value) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", value)
    _, again = sign_in(served, token)  # the same token signs in to another session
    assert again.cookies["jiayi_session"] != value
    with served.services.store.cursor() as cur:
        cur.execute("SELECT * FROM web_sessions")
        stored = repr(cur.fetchall())
    assert value not in stored and token not in stored and secret not in stored
    assert signed_in(http)
    http.close()


def test_a_token_in_the_cookie_as_before_signs_nobody_in(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        http.cookies.set("jiayi_session", nurse(served), path="/ui")
        r = http.get("/ui/patients")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/sign-in")


def test_a_session_ends_when_unused_and_at_its_lifetime(served: Served) -> None:
    http, _ = sign_in(served, nurse(served))
    began = time.monotonic()
    while time.monotonic() - began < LIFETIME - 1.5:  # in use: stays signed in past IDLE
        assert signed_in(http), f"signed out after {time.monotonic() - began:.1f} s"
        time.sleep(IDLE / 4)
    time.sleep(max(0.0, LIFETIME + 0.5 - (time.monotonic() - began)))
    assert not signed_in(http)  # its lifetime is over, however busy it was
    http.close()
    idle, _ = sign_in(served, nurse(served))
    assert signed_in(idle)
    time.sleep(IDLE + 0.5)
    assert not signed_in(idle)  # unused for longer than IDLE
    idle.close()


def test_sign_out_and_revoking_the_token_end_the_session_on_the_server(served: Served) -> None:
    token = nurse(served)
    http, _ = sign_in(served, token)
    copied = http.cookies["jiayi_session"]
    out = http.post("/ui/sign-out", data={"csrf": form_token(http, "/ui/patients")})
    assert out.status_code == 303
    with httpx.Client(base_url=served.url, timeout=30) as replay:
        replay.cookies.set("jiayi_session", copied, path="/ui")
        assert not signed_in(replay)  # the cookie's session is gone, not just the cookie
    revoked, _ = sign_in(served, token)
    token_id = token.split("_")[1]
    assert served.services.tokens.revoke(token_id)
    assert not signed_in(revoked)
    with served.services.store.cursor() as cur:
        cur.execute("SELECT count(*) FROM web_sessions WHERE token_hash IN "
                    "(SELECT token_hash FROM api_tokens WHERE token_id = ?)", (token_id,))  # fmt: skip
        assert cur.fetchone()[0] == 0
    revoked.close()


def test_a_form_token_from_another_session_is_refused(served: Served) -> None:
    token = nurse(served)
    first, _ = sign_in(served, token)
    second, _ = sign_in(served, token)  # the same person, another session
    mine, theirs = form_token(second, "/ui/patients"), form_token(first, "/ui/patients")
    assert mine != theirs
    assert second.post("/ui/sign-out", data={"csrf": theirs}).status_code == 403
    # nor with the other browser's form cookie planted beside it (double submit passed that)
    before_sign_in = httpx.Client(base_url=served.url, timeout=30)
    planted = form_token(before_sign_in, "/ui/sign-in")
    second.cookies.set("jiayi_csrf", before_sign_in.cookies["jiayi_csrf"], path="/ui")
    assert second.post("/ui/sign-out", data={"csrf": planted}).status_code == 403
    assert signed_in(second)
    assert second.post("/ui/sign-out", data={"csrf": mine}).status_code == 303
    assert not signed_in(second) and signed_in(first)
    for http in (first, second, before_sign_in):
        http.close()

"""Over HTTP, a step dated before the step it follows is a 409 with a stable code (issue 15:
a hospital accepted a referral at 1900-01-02, 126 years before it was requested)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jiayi.settings import Settings
from tests.e2e.pages_world import PagesWorld, serve_world
from tests.e2e.server import bearer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PagesWorld]:
    data = Path(tmp_path_factory.mktemp("order")) / "data"
    w = serve_world(Settings(data_dir=data, postgres_url=None))
    yield w
    w.stop()


def test_an_acceptance_dated_before_the_request_is_a_409(world: PagesWorld) -> None:
    before = world.app.max_position()
    with httpx.Client(
        base_url=world.url, timeout=30, headers=bearer(world.tokens["hospital"])
    ) as http:
        r = http.post(
            f"/referrals/{world.pending_referral}/accept", json={"at": "1900-01-02T00:00:00+08:00"}
        )
        assert r.status_code == 409, r.text
        problem = r.json()
        assert problem["code"] == "step-before-predecessor"
        assert problem["detail"].startswith(
            "the acceptance (1900-01-01T16:00:00+00:00) cannot come before the request ("
        )
        assert world.app.max_position() == before  # nothing recorded
        r = http.post(f"/referrals/{world.pending_referral}/accept", json={})
        assert r.status_code == 200, r.text

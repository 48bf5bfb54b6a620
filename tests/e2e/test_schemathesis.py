"""Property-based run over the OpenAPI document: no input makes the API answer 5xx.

Bounded: a few examples per operation, in-process (ASGI) on the embedded SQLite default with
the real read side (the projections following the log in-process), as an auditor (reads) and
as center and hospital staff (commands).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.main import create_app
from api.tokens import Role
from jiayi.bootstrap import build_application, build_projections
from jiayi.settings import Settings
from tests.world import build_world

#: Examples per operation: the run stays well under a minute.
EXAMPLES = 10


@pytest.fixture
def api_setup(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    config = Settings(data_dir=tmp_path / "data", postgres_url=None)
    application = build_application(config)
    projections = build_projections(config, application)
    world = build_world(application)
    app = create_app(config, app=application, queries=projections.queries)
    tokens = app.state.services.tokens
    who = {
        "center": tokens.issue("gp-1", Role.CENTER_STAFF, world.center, "鼓楼区")[0],
        "hospital": tokens.issue("desk", Role.HOSPITAL_STAFF, world.hospital, "鼓楼区")[0],
        "auditor": tokens.issue("aud", Role.AUDITOR)[0],
    }
    yield app, who
    app.state.services.close()
    projections.close()
    application.close()


def role_for(method: str, path: str) -> str:
    if method.upper() == "GET":
        return "auditor"
    hospital_steps = ("/accept", "/reject", "/arrival", "/admission", "/return", "attendance")
    if path in ("/quotas", "/referrals/returns", "/quotas/{quota_id}/release") or (
        "/departments" in path
    ):
        return "hospital"
    return "hospital" if path.endswith(hospital_steps) else "center"


def exercise(operation: Any, token: str, failures: list[str]) -> None:
    """Call ``operation`` with generated inputs; record any 5xx answer."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code} "
                f"{response.text[:200]} (body {case.body!r:.200})"
            )

    run()


def test_no_input_makes_a_server_error(api_setup: tuple[Any, dict[str, str]]) -> None:
    app, who = api_setup
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        exercise(operation, who[role_for(operation.method, operation.path)], failures)
    assert operations >= 40
    assert not failures, "\n".join(failures[:20])

"""E2E fixtures: the API served by uvicorn on a free loopback port, on SQLite and PostgreSQL,
with the real read side (the projections, their runner following the log in-process)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from jiayi.settings import Settings
from tests.e2e.server import HttpWorld, Served, build_http_world, serve


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with serve(settings) as server:
        yield server


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


@pytest.fixture
def world(served: Served, http: httpx.Client) -> HttpWorld:
    return build_http_world(served, http)

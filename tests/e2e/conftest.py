"""E2E fixtures: the API served by uvicorn on a free loopback port, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from api.main import create_app
from jiayi.settings import Settings
from tests.e2e.server import HttpWorld, Served, build_http_world


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    server = Served(create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


@pytest.fixture
def world(served: Served, http: httpx.Client) -> HttpWorld:
    return build_http_world(served, http)

"""Shared fixtures: real PostgreSQL and Apache Kafka (started by the test command), SQLite.

``JIAYI_TEST_POSTGRES_URL`` names the server (``make test`` starts one and sets it). Each test
that uses PostgreSQL gets a schema of its own, dropped afterwards. ``JIAYI_TEST_KAFKA`` names
the broker; tests use topics of their own. With ``CI=true`` a test that needs PostgreSQL or
Kafka fails when none is reachable instead of skipping.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from domain.application import CareCoordination
from eventstore.keys import MasterKey
from jiayi.bootstrap import Projections, build_application, build_projections
from jiayi.settings import Settings
from tests.world import World, build_world

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A PostgreSQL deployment needs its master key file (JIAYI_MASTER_KEY_FILE): one for the whole
# session, used by every store of the tests and inherited by the processes they start (the
# embedded default's own key file is tested with the variable unset).
if not os.environ.get("JIAYI_MASTER_KEY_FILE"):
    _keys = Path(tempfile.mkdtemp(prefix="jiayi-test-keys-")) / "master.key"
    MasterKey.create(_keys)
    os.environ["JIAYI_MASTER_KEY_FILE"] = str(_keys)


def _require(service: str, reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{service} is required under CI=true: {reason}")
    pytest.skip(f"{service} not available: {reason}")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("JIAYI_TEST_POSTGRES_URL")
    if not url:
        _require("PostgreSQL", "JIAYI_TEST_POSTGRES_URL is not set (run `make test`)")
    assert url is not None
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        _require("PostgreSQL", str(exc))
    return url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """A real Apache Kafka broker (``JIAYI_TEST_KAFKA``; ``make test`` starts one), with its
    administrator's credentials in ``JIAYI_TEST_KAFKA_USERNAME`` / ``_PASSWORD``."""
    address = os.environ.get("JIAYI_TEST_KAFKA")
    if not address:
        _require("Kafka", "JIAYI_TEST_KAFKA is not set (run `make test`)")
    assert address is not None
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from tests.kafka_helpers import client_config

    # A broker that has just said it started may still be loading its partitions and
    # credentials (many topics of earlier runs): give it a moment before calling it absent.
    deadline = time.monotonic() + 60
    while True:
        try:
            KafkaAdminClient(**client_config(address), request_timeout_ms=5000).close()
            return address
        except KafkaError as exc:
            if time.monotonic() >= deadline:
                _require("Kafka", f"{address}: {exc}")
                raise
            time.sleep(1)


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # the views replayed as of a moment live in schemas named after this one
        replays = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (f"{name}_asof_",)
        ).fetchall()
        for schema in [name, *(r[0] for r in replays)]:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class Clock:
    """A clock tests can move; starts at a fixed moment."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", postgres_url=None)


@pytest.fixture
def postgres_settings(postgres_url: str, postgres_schema: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", postgres_url=postgres_url, postgres_schema=postgres_schema
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    """The same test once on the embedded SQLite default and once on real PostgreSQL."""
    fixture = "sqlite_settings" if request.param == "sqlite" else "postgres_settings"
    result: Settings = request.getfixturevalue(fixture)
    return result


@pytest.fixture
def make_app(settings: Settings, clock: Clock) -> Iterator[Callable[[], CareCoordination]]:
    apps: list[CareCoordination] = []

    def make() -> CareCoordination:
        app = build_application(settings, clock=clock)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[[], CareCoordination]) -> CareCoordination:
    return make_app()


@pytest.fixture
def world(app: CareCoordination) -> World:
    """Centers, hospitals, teams and their staff, made through the use cases."""
    return build_world(app)


@pytest.fixture
def views(settings: Settings, app: CareCoordination) -> Iterator[Projections]:
    """The views of ``settings``, followed in this process (poll 20 ms)."""
    found = build_projections(settings, app, poll=0.02)
    yield found
    found.close()

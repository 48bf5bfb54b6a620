"""A process outlives a restart of PostgreSQL: the statement that meets a lost connection fails
(the API answers 503, the relay retries), and the next one works on a new connection.

Found by ``make chaos``: after PostgreSQL restarted, the key ring kept its closed connection,
so every registration answered 503 and the relay stopped for good."""

from __future__ import annotations

import contextlib

import psycopg
import pytest

from api.errors import UNAVAILABLE
from domain.application import CareCoordination
from domain.patients import Patient
from jiayi.bootstrap import build_application, keyring_of
from jiayi.settings import Settings
from tests.world import build_world

pytestmark = pytest.mark.postgres


def lose_connection(postgres_url: str, app: CareCoordination) -> None:
    """What a restart of the server does to the connection the app's key ring holds."""
    backend = keyring_of(app).store.conn.info.backend_pid
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))


def test_registrations_and_personal_data_work_again_after_the_key_rings_connection_is_lost(
    postgres_settings: Settings, postgres_url: str
) -> None:
    writer = build_application(postgres_settings)
    world = build_world(writer)
    first = world.patient(serial=1)
    lose_connection(postgres_url, writer)
    with contextlib.suppress(*UNAVAILABLE):  # the first statement may meet the lost connection
        world.patient(name="欧阳娜娜", serial=2)  # a new patient: a new data key
    patient = world.patient(name="欧阳娜娜", serial=3)  # the client's retry

    reader = build_application(postgres_settings)  # another process: no key cached
    assert reader.load(Patient, first).name == "王秀英"
    lose_connection(postgres_url, reader)
    with contextlib.suppress(*UNAVAILABLE):
        reader.load(Patient, patient)
    assert reader.load(Patient, patient).name == "欧阳娜娜"  # the relay's retry
    writer.close()
    reader.close()

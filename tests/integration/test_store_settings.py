"""How the event store is configured: database functions pinned off, the demo reproducible, a
bad setting refused when a command starts."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import JSONTranscoder
from psycopg import sql

from domain.application import CareCoordination
from domain.common import OrjsonTranscoder
from jiayi.bootstrap import build_application
from jiayi.demo import generate
from jiayi.settings import Settings
from tests.conftest import Clock

ENABLE_DB_FUNCTIONS = "POSTGRES_ENABLE_DB_FUNCTIONS"


@pytest.mark.postgres
def test_database_functions_stay_off_whatever_the_environment_says(
    postgres_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENABLE_DB_FUNCTIONS, "y")
    monkeypatch.setenv(f"{CareCoordination.name.upper()}_{ENABLE_DB_FUNCTIONS}", "y")
    app = build_application(postgres_settings)
    try:
        assert app.env.get(ENABLE_DB_FUNCTIONS) == "n"
        # The recorder inserts with its table lock (commit order = id order), not via the
        # database function that lets a log reader miss events under concurrent writers.
        assert app.recorder.datastore.enable_db_functions is False  # type: ignore[attr-defined]
    finally:
        app.close()


@pytest.fixture
def other_store(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A second, empty store of the same kind as ``settings``."""
    if not settings.uses_postgres:
        yield settings.model_copy(update={"data_dir": tmp_path / "other"})
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield settings.model_copy(update={"postgres_schema": schema})
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_the_demo_city_is_the_same_for_the_same_seed_and_day(
    make_app: Callable[[], CareCoordination], other_store: Settings, clock: Clock
) -> None:
    today = clock.now.date() - timedelta(days=1)
    first = make_app()
    second = build_application(other_store, clock=clock)
    try:
        one = generate(first, patients=120, seed=11, today=today)
        two = generate(second, patients=120, seed=11, today=today)
        log_one, log_two = (
            [
                (n.originator_id, n.originator_version, n.topic)
                for n in app.recorder.select_notifications(start=1, limit=100_000)
            ]
            for app in (first, second)
        )
    finally:
        second.close()
    assert one.events == two.events == len(log_one) > 500
    assert one.counts == two.counts
    assert one.counts["contracts signed"] > 50
    assert (one.patients, one.teams) == (two.patients, two.teams)
    assert log_one == log_two


def test_bulk_mode_writes_the_same_log_as_one_transaction_per_use_case(
    make_app: Callable[[], CareCoordination], other_store: Settings, clock: Clock
) -> None:
    today = clock.now.date() - timedelta(days=1)
    bulk = make_app()
    single = build_application(other_store, clock=clock)
    try:
        generate(bulk, patients=80, seed=5, today=today, bulk=True)
        generate(single, patients=80, seed=5, today=today, bulk=False)
        logs = [
            [
                (n.originator_id, n.originator_version, n.topic)
                for n in app.recorder.select_notifications(start=1, limit=100_000)
            ]
            for app in (bulk, single)
        ]
    finally:
        single.close()
    assert len(logs[0]) > 300
    assert logs[0] == logs[1]


def test_events_are_stored_as_the_librarys_json_would_store_them(
    make_app: Callable[[], CareCoordination], clock: Clock
) -> None:
    """Events are written with orjson; every document of a demo history is byte for byte what
    the library's own ``json`` transcoder writes, and reads back to the same event."""
    app = make_app()
    generate(app, patients=60, seed=2, today=clock.now.date() - timedelta(days=1))
    library = JSONTranscoder()
    app.register_transcodings(library)
    assert isinstance(app.mapper.transcoder, OrjsonTranscoder)
    notifications = app.recorder.select_notifications(start=1, limit=100_000)
    assert len(notifications) > 300
    for n in notifications:
        # As stored: personal fields are tokens (eventstore.personal), JSON strings like any.
        stored = library.decode(n.state)
        assert app.mapper.transcoder.encode(stored) == library.encode(stored) == n.state
        event = app.mapper.to_domain_event(n)
        opened = dict(vars(event))
        assert opened.keys() - {"originator_id", "originator_version"} == stored.keys() - {
            "class_version"
        }


def test_the_exchange_recorder_lists_the_changes_after_a_position(
    settings: Settings, clock: Clock
) -> None:
    """What the consumer checks its kept aggregates against, on both stores: every event
    after a log position, except in the ranges the consumer recorded itself."""
    from jiayi.bootstrap import build_application
    from tests.world import build_world

    app = build_application(settings, clock=clock)
    try:
        world = build_world(app)
        patient = world.contracted_patient()
        before = app.max_position()
        own = app.tag_patient(patient, tag="hypertension", actor=world.gp).position
        app.tag_patient(patient, tag="type2_diabetes", actor=world.gp)
        after = app.max_position()
        version = len(list(app.events.get(patient)))
        changes = app.recorder.changes_since(before, [(own, own)])  # type: ignore[attr-defined]
        assert [c[1:] for c in changes if c[1] == patient] == [(patient, version)]
        assert all(before < c[0] <= after and c[0] != own for c in changes)
        assert app.recorder.changes_since(after) == []  # type: ignore[attr-defined]
        everything = app.recorder.changes_since(before)  # type: ignore[attr-defined]
        assert [c[0] for c in everything] == [own] + [c[0] for c in changes]
        # past a limit, the caller is told there are too many to list
        assert app.recorder.changes_since(before, limit=len(everything)) == everything  # type: ignore[attr-defined]
        assert app.recorder.changes_since(before, limit=len(everything) - 1) is None  # type: ignore[attr-defined]
    finally:
        app.close()


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("JIAYI_POSTGRES_URL", "postgresql//jiayi:pw-s3cret@127.0.0.1/jiayi", "postgresql://"),
        ("JIAYI_POSTGRES_URL", "postgresql://jiayi:pw-s3cret@127.0.0.1:0x1/jiayi", "port"),
        ("JIAYI_CIPHER_KEY", "pw-s3cret", "base64"),
        ("JIAYI_TIMEZONE", "Asia/Peking", "time zone"),
    ],
)
def test_a_command_with_a_bad_setting_stops_at_start_with_one_line(
    tmp_path: Path, variable: str, value: str, reason: str
) -> None:
    from tests.e2e.server import free_port

    port = str(free_port())  # should the check ever let it start, it serves out of the way
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update({variable: value, "JIAYI_DATA_DIR": str(tmp_path / "data")})
    done = subprocess.run(
        [sys.executable, "-m", "jiayi.cli", "serve", "--port", port, "--demo-patients", "0"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],  # this checkout's code
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jiayi serve: invalid setting {variable}: ")
    assert reason in lines[0]
    assert "s3cret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_serve_with_a_wrong_master_key_file_stops_at_start_with_one_line(
    tmp_path: Path, settings: Settings
) -> None:
    """The store's data keys are wrapped by the session's master key; a process given another
    key file stops before serving, naming the file, with no traceback."""
    from eventstore.keys import MasterKey
    from tests.e2e.server import free_port

    build_application(settings).close()  # the store and its keys exist
    wrong = tmp_path / "wrong.key"
    MasterKey.create(wrong)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_DATA_DIR=str(settings.data_dir),
        JIAYI_POSTGRES_URL=settings.postgres_dsn() if settings.uses_postgres else "",
        JIAYI_POSTGRES_SCHEMA=settings.postgres_schema or "",
        JIAYI_MASTER_KEY_FILE=str(wrong),
    )
    done = subprocess.run(
        [sys.executable, "-m", "jiayi.cli", "serve", "--port", str(free_port())],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jiayi serve: this store's data keys are")
    assert str(wrong) in lines[0] and "Traceback" not in done.stderr

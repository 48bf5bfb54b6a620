"""A damaged stored event (a row changed outside the application) is named wherever it is met,
on both stores: the recorder's bulk reads name it per aggregate; the projection runner stops
just before it (nothing skipped, nothing past it), ``/ready`` says so, and it goes on once the
row is repaired; ``jiayi projections rebuild`` / ``catch-up`` end with one line naming it; the
API names the position of one only the cipher finds out; the relay stops before it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from eventsourcing.cipher import AESCipher
from eventsourcing.persistence import Notification
from pydantic import SecretStr

from api.main import create_app
from api.tokens import Role
from consumers.outbound import Relay
from domain.application import CareCoordination
from eventstore.errors import DamagedEvent
from jiayi import cli
from jiayi.bootstrap import build_application, build_projections, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import Runner, RunnerThread
from tests.conftest import Clock
from tests.damage import Damage, damage, repair
from tests.e2e.server import Served, bearer
from tests.world import DISTRICT, World, build_world


def story(world: World) -> tuple[UUID, UUID, UUID]:
    """Two patients, each with a referral; their ids and the first referral's."""
    first = world.contracted_patient(serial=1)
    second = world.contracted_patient(serial=2)
    referral = world.referral(first)
    world.referral(second)
    return first, second, referral


def wait(until: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_bulk_reads_name_each_damaged_aggregate_and_read_the_others(
    app: CareCoordination, world: World, settings: Settings
) -> None:
    first, second, referral = story(world)
    done = damage(settings, first, 2)
    recorder: Any = app.recorder
    everyone = [first, second, referral]
    with pytest.raises(DamagedEvent) as raised:
        recorder.select_events_of(everyone)
    assert (raised.value.position, raised.value.originator_id) == (done.position, first)

    damaged: dict[UUID, DamagedEvent] = {}
    stored = recorder.select_events_of(everyone, damaged)
    assert {e.originator_id for e in stored} == {second, referral}
    assert list(damaged) == [first]
    checked = recorder.damaged_among([*everyone, uuid4()])  # (the digests in SQL on PostgreSQL)
    assert list(checked) == [first]
    for found in (damaged[first], checked[first]):
        assert (found.position, found.version, found.topic) == (done.position, 2, done.topic)
        assert found.reason.startswith("does not match its digest")
    assert recorder.position_of(first, 2) == done.position
    repair(settings, done)
    assert recorder.damaged_among(everyone) == {}


def test_the_runner_stops_just_before_a_damaged_event_and_goes_on_once_it_is_repaired(
    app: CareCoordination, world: World, settings: Settings
) -> None:
    _, second, _ = story(world)
    done = damage(settings, second, 1)  # the second patient's registration, mid-log
    assert 1 < done.position < app.max_position()
    store = view_location(settings).open()
    try:
        runner = Runner(store, LogReader(app))
        with pytest.raises(DamagedEvent) as raised:
            runner.catch_up()
        assert raised.value.position == done.position
        assert runner.position() == done.position - 1  # everything before it, nothing after
        with pytest.raises(DamagedEvent):  # and it is not skipped
            runner.run_once()
        assert runner.position() == done.position - 1
        repair(settings, done)
        runner.catch_up()
        assert runner.position() == app.max_position()
    finally:
        store.close()


class CountingReader(LogReader):
    def __init__(self, app: CareCoordination) -> None:
        super().__init__(app)
        self.reads = 0

    def page(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        self.reads += 1
        return super().page(after, limit, stop)


def test_the_running_views_stop_at_a_damaged_event_and_ready_says_where(
    app: CareCoordination, world: World, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _, second, _ = story(world)
    done = damage(settings, second, 1)
    projections = build_projections(settings, app, run=False)
    reader = CountingReader(app)
    runner = RunnerThread(view_location(settings).open, reader, damaged_retry=0.5)
    caplog.set_level(logging.ERROR, logger="projections.runner")
    served = Served(create_app(settings, app=app, queries=projections.queries)).start()
    try:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            runner.start()
            wait(lambda: runner.damaged is not None)
            assert runner.damaged is not None and runner.damaged.position == done.position
            assert projections.queries.position() == done.position - 1
            assert f"position {done.position}," in caplog.text
            reads = reader.reads
            time.sleep(1.2)
            assert reader.reads - reads <= 6  # it looks again slowly, it does not spin

            r = http.get("/ready")
            assert r.status_code == 503
            problem = r.json()
            assert problem["code"] == "views-stopped"
            assert f"position {done.position}," in problem["detail"]
            assert str(second) in problem["detail"] and done.topic in problem["detail"]
            assert (problem["position"], problem["topic"]) == (done.position, done.topic)
            assert "王秀英" not in r.text  # nothing of what it holds

            repair(settings, done)
            wait(lambda: projections.queries.position() == app.max_position())
            assert runner.damaged is None
            assert http.get("/ready").status_code == 200
    finally:
        served.stop()
        runner.stop()
        projections.close()


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads its settings from the environment: these test settings."""
    monkeypatch.setenv("JIAYI_DATA_DIR", str(settings.data_dir))
    if settings.uses_postgres:
        monkeypatch.setenv("JIAYI_POSTGRES_URL", settings.postgres_dsn())
        monkeypatch.setenv("JIAYI_POSTGRES_SCHEMA", settings.postgres_schema or "")
    else:
        monkeypatch.delenv("JIAYI_POSTGRES_URL", raising=False)
        monkeypatch.delenv("JIAYI_POSTGRES_SCHEMA", raising=False)


def assert_one_line_naming(err: str, done: Damage) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"position {done.position}," in lines[0]
    assert f"aggregate {done.aggregate} version {done.version}" in lines[0]
    assert done.topic in lines[0] and "does not match its digest" in lines[0]


def test_rebuild_and_catch_up_end_with_one_line_naming_the_damaged_event(
    app: CareCoordination,
    world: World,
    settings: Settings,
    environment: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, second, _ = story(world)
    done = damage(settings, second, 1)

    assert cli.main(["projections", "rebuild"]) == 3
    assert_one_line_naming(capsys.readouterr().err, done)

    assert cli.main(["projections", "catch-up"]) == 3
    err = capsys.readouterr().err
    assert_one_line_naming(err, done)
    assert f"at position {done.position - 1}" in err  # where the views stop

    repair(settings, done)
    assert cli.main(["projections", "rebuild"]) == 0
    assert capsys.readouterr().err == ""


def test_the_api_names_the_position_of_an_event_only_the_cipher_finds_damaged(
    settings: Settings, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    encrypted = settings.model_copy(update={"cipher_key": SecretStr(AESCipher.create_key(16))})
    app = build_application(encrypted, clock=clock)
    try:
        world = build_world(app)
        referral = world.referral(world.contracted_patient())
        # the row changed and its digest too: it passes the chain, it does not decrypt
        done = damage(encrypted, referral, 1, forge_digest=True)
        api = create_app(encrypted, app=app)
        token, _ = api.state.services.tokens.issue(
            "desk", Role.HOSPITAL_STAFF, world.hospital, DISTRICT
        )
        caplog.set_level(logging.ERROR, logger="jiayi.api")
        served = Served(api).start()
        try:
            r = httpx.post(
                f"{served.url}/referrals/{referral}/accept", json={}, headers=bearer(token)
            )
        finally:
            served.stop()
        assert (r.status_code, r.json()["code"]) == (500, "damaged-event")
        [line] = [r.getMessage() for r in caplog.records if r.name == "jiayi.api"]
        assert f"(position {done.position}, aggregate {referral} version 1" in line
        assert "does not decrypt" in line
    finally:
        app.close()


class Acked:
    def get(self, timeout: float | None = None) -> None:
        return None


class Producer:
    """Takes every message at once (the relay's producer, without a broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: Any) -> Any:
        self.sent.append((topic, value))
        return Acked()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_the_relay_publishes_up_to_a_damaged_event_and_stops_before_it(
    app: CareCoordination, world: World, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _, second, _ = story(world)
    done = damage(settings, second, 1)
    producer = Producer()
    relay = Relay(app, lambda: producer, "t.", platform="platform", damaged_retry=0.3)  # type: ignore[arg-type,return-value]
    while True:
        try:
            if not relay.publish_once():
                break
        except DamagedEvent as exc:
            assert exc.position == done.position
            break
    assert relay.position() == done.position - 1  # everything before it, nothing after
    assert relay.stopped is not None and relay.stopped[0] == done.position
    assert len([t for t, _ in producer.sent if t == "platform"]) == done.position - 1

    caplog.set_level(logging.ERROR, logger="consumers.outbound")
    stop = threading.Event()
    running = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait(lambda: f"stopped before position {done.position}" in caplog.text)
        time.sleep(0.5)
        assert relay.position() == done.position - 1
        repair(settings, done)
        wait(lambda: relay.position() == app.max_position())
        assert relay.stopped is None
    finally:
        stop.set()
        running.join(10)
    platform = [v for t, v in producer.sent if t == "platform"]
    assert len(platform) == app.max_position()  # each once, none skipped

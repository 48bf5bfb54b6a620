"""One relay publishes at a time; another stands by and takes over when the first goes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from jiayi.bootstrap import build_application, build_relay, ensure_topics
from jiayi.settings import Settings
from runtime.leadership import FileLeadership, PostgresLeadership
from tests.kafka_helpers import as_json, exchange_settings, read_all
from tests.world import build_world


def test_a_lock_file_admits_one_holder_until_it_lets_go(tmp_path: Path) -> None:
    first, second = (FileLeadership(tmp_path / "relay.lock") for _ in range(2))
    assert (first.hold(), second.hold()) == (True, False)
    assert first.hold()  # still held
    first.release()
    assert second.hold()
    assert not first.hold()
    second.release()


@pytest.mark.postgres
def test_the_advisory_lock_passes_on_when_the_holders_session_dies(postgres_url: str) -> None:
    first, second = (PostgresLeadership(postgres_url, "test:relay") for _ in range(2))
    other = PostgresLeadership(postgres_url, "test:another-relay")
    try:
        assert (first.hold(), second.hold(), other.hold()) == (True, False, True)
        assert first.hold() and other.hold()  # held: checked in pg_locks, not just alive
        assert first.conn is not None
        pid = first.conn.info.backend_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert not first.hold()  # it notices that it lost the lock
        assert second.hold()
        assert not first.hold()
    finally:
        for leadership in (first, second, other):
            leadership.release()


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_second_relay_stands_by_and_takes_over_without_duplicates(
    postgres_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = exchange_settings(postgres_settings, kafka_bootstrap)
    ensure_topics(settings)
    app = build_application(settings)
    world = build_world(app)
    relays = [build_relay(settings, app=build_application(settings)) for _ in range(2)]
    stops = [threading.Event() for _ in relays]
    threads = [
        threading.Thread(target=r.run, args=(s,), kwargs={"standby_poll": 0.2}, daemon=True)
        for r, s in zip(relays, stops, strict=True)
    ]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while max(r.position() for r in relays) < app.max_position():
            assert time.monotonic() < deadline, "nobody published"
            time.sleep(0.1)
        time.sleep(0.5)  # the standby had every chance to publish too
        leader = next(i for i, r in enumerate(relays) if r.published)
        standby = 1 - leader
        assert relays[standby].published == 0

        stops[leader].set()  # a clean stop (or a crash) lets the lock go
        threads[leader].join(10)
        for i in range(3):
            world.patient(serial=100 + i)
        deadline = time.monotonic() + 60
        while relays[standby].position() < app.max_position():
            assert time.monotonic() < deadline, "the standby did not take over"
            time.sleep(0.1)
        assert relays[standby].published > 0
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(10)
        for r in relays:
            r.app.close()
    records = read_all(kafka_bootstrap, settings.platform_topic or "", app.max_position())
    ids = [as_json(r)["id"] for r in records]
    assert len(ids) == len(set(ids)) == app.max_position()  # each event once, none missing
    for partition in {r.partition for r in records}:  # and in log order
        sequence = [int(as_json(r)["sequence"]) for r in records if r.partition == partition]
        assert sequence == sorted(sequence)
    app.close()

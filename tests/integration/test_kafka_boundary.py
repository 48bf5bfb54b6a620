"""Issue 15, the Kafka inbound boundary, on a real broker (SQLite and PostgreSQL): no single
partner message blocks its partition or slips past the contract. An oversized message is
dead-lettered truncated, naming where the original is; a dead letter never repeats an
unbounded value; a message without the patient's key, or with a control character in any
text, is dead-lettered, not applied; and a dead-letter topic that refuses writes does not stop
the partition: the next message applies, the position advances once, nothing applies twice."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import SecretStr

from consumers.deadletter import HEADER_VALUE_LIMIT, TRUNCATED_VALUE
from consumers.inbound import InboundConsumer, tracking_name
from consumers.messages import partner_event
from consumers.topics import inbound_topic
from domain.application import CareCoordination
from domain.followups import FollowUps
from jiayi import kafka_access
from jiayi.bootstrap import build_admin, build_inbound_consumer, ensure_topics
from jiayi.settings import Settings
from tests.kafka_helpers import (
    client_config,
    drain,
    exchange_settings,
    headers,
    partners,
    read_all,
    send_inbound,
)
from tests.world import World, build_world

pytestmark = pytest.mark.kafka

FOLLOWUP = "cn.jiayi.partner.followup.recorded.v2"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Settings:
    """Topics of the test's own, one partition each (so "the next message" is on the same
    partition whatever its key), on the embedded SQLite default and on PostgreSQL."""
    store = "sqlite_settings" if request.param == "sqlite" else "postgres_settings"
    base: Settings = request.getfixturevalue(store)
    return exchange_settings(base, kafka_bootstrap, partitions=1)


@pytest.fixture
def world(settings: Settings, app: CareCoordination) -> World:
    world = build_world(app)
    ensure_topics(settings, partners(world))
    return world


@pytest.fixture
def inbound(settings: Settings, app: CareCoordination, world: World) -> Iterator[InboundConsumer]:
    consumer = build_inbound_consumer(settings, app=app)
    yield consumer
    consumer.consumer.close()
    consumer.dead_letters.close()


def visit(world: World, patient: UUID, id: str, **data: Any) -> bytes:
    """A follow-up visit of ``patient`` the world's center sends (``data`` added/overriding)."""
    fields = {"patient_id": str(patient), "on": world.today.isoformat(), "kind": "phone", **data}
    return partner_event(FOLLOWUP, world.center, id, fields, world.now())


def send(settings: Settings, *messages: tuple[UUID | bytes | None, bytes]) -> None:
    """Each message with its key (a patient id, raw bytes, or none) to its source's topic."""
    send_inbound(
        settings,
        [(str(k).encode() if isinstance(k, UUID) else k, value) for k, value in messages],
    )


def visits(app: CareCoordination, patient: UUID) -> int:
    return len(app.load(FollowUps, FollowUps.id_for(patient)).visits)


def record_at(settings: Settings, topic: str, partition: int, offset: int) -> ConsumerRecord:
    """The record at ``offset`` of the partition (what a dead letter's headers point to)."""
    consumer = KafkaConsumer(**client_config(settings), enable_auto_commit=False)
    try:
        part = TopicPartition(topic, partition)
        consumer.assign([part])
        consumer.seek(part, offset)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                return records[0]
        raise AssertionError(f"nothing at {topic}:{partition}@{offset}")
    finally:
        consumer.close()


def settled(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer, end: int
) -> None:
    """The center's partition is stored at ``end`` (every message handled, the position
    advanced once per message) and a restarted consumer, once it holds the partition, finds
    nothing left to do."""
    inbound.consumer.close()  # leaves the group: the restarted one takes the partition at once
    topic = inbound_topic(settings.partner_topic_prefix, world.center)
    part = TopicPartition(topic, 0)
    assert app.recorder.max_tracking_id(tracking_name(part)) == end  # type: ignore[attr-defined]
    again = build_inbound_consumer(settings, app=app)
    try:
        drain(again, lambda: again.positions.get(part) == end, timeout=30)
        assert (again.applied, again.dead) == (0, 0)
    finally:
        again.consumer.close()
        again.dead_letters.close()


def test_an_oversized_message_is_dead_lettered_truncated_and_the_next_one_applies(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    # 600 KB, most of it one over-long field: over the maximum size (256 KiB by default)
    huge = visit(world, patient, "big-1", note="体" * 200_000)
    # within the maximum size, the field still far over its schema's maxLength (4000)
    long = visit(world, patient, "long-1", note="x" * 100_000)
    assert len(huge) > 600_000 > 256 * 1024 > len(long) > 100_000
    send(settings, (patient, huge), (patient, long), (patient, visit(world, patient, "ok-1")))
    drain(inbound, lambda: inbound.applied >= 1 and inbound.dead >= 2, timeout=40)

    assert visits(app, patient) == 1
    too_large, too_long = read_all(settings, settings.dead_letter_topic, 2)
    reason = headers(too_large)
    assert reason["jiayi.error.code"] == "message-too-large"
    assert reason["jiayi.error.truncated"] == str(len(huge) + len(str(patient)))
    assert too_large.value == huge[:TRUNCATED_VALUE]
    assert too_large.key == str(patient).encode()
    # the headers say where the original is, and there it is, whole
    where = (reason["__connect.errors.topic"], int(reason["__connect.errors.partition"]))
    original = record_at(settings, *where, int(reason["__connect.errors.offset"]))
    assert original.value == huge

    # the over-long field: the whole message is kept, the reason says which rule, briefly
    assert too_long.value == long
    assert headers(too_long)["jiayi.error.code"] == "schema-violation"
    assert headers(too_long)["__connect.errors.exception.message"] == (
        "data/note: breaks maxLength 4000"
    )
    for dead in (too_large, too_long):
        assert all(len(value) <= HEADER_VALUE_LIMIT for _, value in dead.headers)
    settled(settings, app, world, inbound, 3)


def test_a_message_without_the_patients_key_is_dead_lettered(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    other = world.contracted_patient(serial=7)
    send(
        settings,
        (None, visit(world, patient, "keyless")),
        (other, visit(world, patient, "another-patients-key")),
        (b"gp-1", visit(world, patient, "no-patient-id")),
        (patient, visit(world, patient, "keyed")),
    )
    drain(inbound, lambda: inbound.applied + inbound.dead >= 4)

    assert (inbound.applied, visits(app, patient), visits(app, other)) == (1, 1, 0)
    dead = read_all(settings, settings.dead_letter_topic, 3)
    assert [headers(d)["jiayi.error.code"] for d in dead] == [
        "missing-key",
        "key-mismatch",
        "key-mismatch",
    ]
    assert [headers(d)["__connect.errors.exception.message"] for d in dead] == [
        "the message has no key; its key is the patient id",
        "the key is not the patient the data names (data/patient_id)",
        "the key is not a patient id (a UUID)",
    ]
    settled(settings, app, world, inbound, 4)


def test_a_control_character_in_any_text_is_dead_lettered_with_its_field(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    bad = [
        (visit(world, patient, "nul", note="血压\x00高"), "data/note: control character U+0000"),
        (
            visit(world, patient, "rs", staff_id="gp\x1e1"),
            "data/staff_id: control character U+001E",
        ),
        (visit(world, patient, "us\x1f"), "id: control character U+001F"),
        (visit(world, patient, "nel", note="a\x85b"), "data/note: control character U+0085"),
        (visit(world, patient, "del", note="a\x7fb"), "data/note: control character U+007F"),
    ]
    lines = visit(world, patient, "lines", note="血压 150/95\n\t复查\r\n")  # lines are text
    send(settings, *[(patient, value) for value, _ in bad], (patient, lines))
    drain(inbound, lambda: inbound.applied + inbound.dead >= len(bad) + 1)

    assert (inbound.applied, visits(app, patient)) == (1, 1)  # the one with lines
    dead = read_all(settings, settings.dead_letter_topic, len(bad))
    assert [d.value for d in dead] == [value for value, _ in bad]
    assert {headers(d)["jiayi.error.code"] for d in dead} == {"control-character"}
    messages = [headers(d)["__connect.errors.exception.message"] for d in dead]
    assert [m.rsplit(" at character", 1)[0] for m in messages] == [m for _, m in bad]
    settled(settings, app, world, inbound, len(bad) + 1)


def test_a_dead_letter_topic_refusing_a_dead_letter_gets_a_notice_and_the_partition_goes_on(
    settings: Settings,
    app: CareCoordination,
    world: World,
) -> None:
    """A dead-letter topic whose records may be at most 2 KB: a 12 KB message's dead letter is
    refused for good, a notice (where the message is, why; none of its content) stands in."""
    settings = settings.model_copy(update={"dead_letter_topic": f"{settings.dead_letter_topic}.2k"})
    admin = build_admin(settings)
    try:
        config = {"max.message.bytes": "2048"}
        admin.create_topics([NewTopic(settings.dead_letter_topic, 1, 1, topic_configs=config)])
    finally:
        admin.close()
    inbound = build_inbound_consumer(settings, app=app)
    patient = world.contracted_patient()
    refused = visit(world, patient, "long", note="体" * 4001)  # breaks maxLength: 12 KB
    try:
        send(settings, (patient, refused), (patient, visit(world, patient, "next")))
        drain(inbound, lambda: inbound.applied + inbound.dead >= 2, timeout=60)
    finally:
        inbound.consumer.close()
        inbound.dead_letters.close()

    assert (inbound.applied, inbound.dead, visits(app, patient)) == (1, 1, 1)
    assert inbound.dead_letters.noticed == 1
    [notice] = read_all(settings, settings.dead_letter_topic, 1)
    topic = inbound_topic(settings.partner_topic_prefix, world.center)
    assert notice.key is None
    assert json.loads(notice.value) == {
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "code": "schema-violation",
    }
    assert headers(notice)["jiayi.error.dead-letter-refused"] == "MessageSizeTooLargeError"
    settled(settings, app, world, inbound, 2)


def test_a_dead_letter_the_consumer_may_not_write_is_logged_and_the_partition_goes_on(
    settings: Settings,
    app: CareCoordination,
    world: World,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The consumer's principal has no right on the dead-letter topic: neither the dead letter
    nor its notice can be written; one log line (where, why; nothing of the message) says so,
    and the partition goes on."""
    topic = inbound_topic(settings.partner_topic_prefix, world.center)
    user, password = f"t-{uuid.uuid4().hex[:8]}-consumer", kafka_access.new_password()
    acl = kafka_access._acl  # the grants of `jiayi partners services`, but the dead letters'
    admin = build_admin(settings)
    try:
        kafka_access._set_password(admin, user, password)
        kafka_access._create_acls(
            admin,
            [
                acl(user, "READ", "TOPIC", topic),
                acl(user, "DESCRIBE", "TOPIC", topic),
                acl(user, "READ", "GROUP", settings.consumer_group),
            ],
        )
    finally:
        admin.close()
    own = settings.model_copy(
        update={"kafka_username": user, "kafka_password": SecretStr(password)}
    )
    inbound = build_inbound_consumer(own, app=app)
    inbound.dead_letters.timeout = 3.0  # the refusal may come as a timeout: keep the test short
    patient = world.contracted_patient()
    note = "夜间胸闷，血压 180/110"
    bad = visit(world, patient, "bad", note=note, on="2000-13-01")  # no such date
    try:
        with caplog.at_level(logging.ERROR, logger="consumers.deadletter"):
            send(settings, (patient, bad), (patient, visit(world, patient, "next")))
            drain(inbound, lambda: inbound.applied + inbound.dead >= 2, timeout=120)
    finally:
        inbound.consumer.close()
        inbound.dead_letters.close()

    assert (inbound.applied, inbound.dead, visits(app, patient)) == (1, 1, 1)
    assert inbound.dead_letters.logged == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "consumers.deadletter"]
    assert f"{topic}:0@0 (schema-violation)" in line
    assert note not in line and str(patient) not in line
    assert read_all(settings, settings.dead_letter_topic, 0, timeout=5) == []
    settled(settings, app, world, inbound, 2)

"""A damaged stored event met by the Kafka consumer: the messages touching that aggregate are
dead-lettered (``damaged-aggregate``, naming the event's place), every other message and
partition goes on; no step is recorded on top of a damaged aggregate, also one the consumer
kept in memory from an earlier batch; a consumer started over a damaged store comes up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from consumers.inbound import DAMAGED_AGGREGATE, InboundConsumer
from consumers.messages import partner_event
from domain.application import CareCoordination
from domain.referrals import Referral
from jiayi.bootstrap import build_inbound_consumer, ensure_topics
from jiayi.settings import Settings
from tests.damage import Damage, damage
from tests.kafka_helpers import drain, exchange_settings, headers, read_all, send_inbound
from tests.world import World

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ACCEPTED = "cn.jiayi.partner.referral.accepted.v1"
ARRIVED = "cn.jiayi.partner.patient.arrived.v1"


@pytest.fixture
def settings(postgres_settings: Settings, kafka_bootstrap: str) -> Settings:
    s = exchange_settings(postgres_settings, kafka_bootstrap)
    ensure_topics(s)
    return s


@pytest.fixture
def inbound(settings: Settings, app: CareCoordination) -> Iterator[InboundConsumer]:
    consumer = build_inbound_consumer(settings, app=app)
    yield consumer
    consumer.consumer.close()


def send(settings: Settings, *messages: tuple[UUID, bytes]) -> None:
    send_inbound(settings, [(str(key).encode(), value) for key, value in messages])


def versions(settings: Settings, aggregate: UUID) -> int:
    with psycopg.connect(settings.postgres_dsn()) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {}.carecoordination_events WHERE originator_id = %s"
            ).format(sql.Identifier(settings.postgres_schema or "public")),
            (aggregate,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def step(kind: str, world: World, referral: UUID, id: str) -> bytes:
    return partner_event(kind, world.hospital, id, {"referral_id": str(referral)}, world.now())


def assert_dead_letter_names(settings: Settings, done: Damage, value: bytes) -> None:
    [dead] = read_all(settings.kafka_bootstrap or "", settings.dead_letter_topic, 1)
    assert dead.value == value
    reason = headers(dead)
    assert reason["jiayi.error.code"] == DAMAGED_AGGREGATE
    message = reason["__connect.errors.exception.message"]
    assert f"position {done.position}," in message
    assert f"aggregate {done.aggregate} version {done.version}" in message
    assert done.topic in message
    assert "uncontrolled hypertension" not in message  # the stored event's content


def test_a_running_consumer_records_no_step_on_a_kept_aggregate_damaged_meanwhile(
    settings: Settings,
    app: CareCoordination,
    world: World,
    inbound: InboundConsumer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    patients = [world.contracted_patient(serial=n) for n in (11, 12, 13)]
    referrals = [world.referral(p) for p in patients]
    send(
        settings,
        *[
            (p, step(ACCEPTED, world, r, f"acc-{i}"))
            for i, (p, r) in enumerate(zip(patients, referrals, strict=True))
        ],
    )
    drain(inbound, lambda: inbound.applied == 3)
    assert referrals[0] in inbound.cache  # kept for the next batches

    done = damage(settings, referrals[0], 2)  # its Referral.Accepted, changed in place
    caplog.set_level(logging.ERROR, logger="consumers.inbound")
    arrivals = [step(ARRIVED, world, r, f"arr-{i}") for i, r in enumerate(referrals)]
    send(settings, *zip(patients, arrivals, strict=True))
    drain(inbound, lambda: inbound.applied + inbound.dead == 6)

    assert (inbound.applied, inbound.dead) == (5, 1)
    assert versions(settings, referrals[0]) == 2  # nothing recorded on top of it
    assert [app.load(Referral, r).status for r in referrals[1:]] == ["arrived", "arrived"]
    assert_dead_letter_names(settings, done, arrivals[0])
    assert f"position {done.position}," in caplog.text
    assert referrals[0] not in inbound.cache


def test_a_consumer_started_over_a_damaged_store_dead_letters_only_what_touches_it(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patients = [world.contracted_patient(serial=n) for n in (21, 22, 23, 24, 25, 26)]
    referrals = [world.referral(p) for p in patients]
    done = damage(settings, referrals[0], 1)  # its Referral.Requested
    accepts = [step(ACCEPTED, world, r, f"acc-{i}") for i, r in enumerate(referrals)]
    send(settings, *zip(patients, accepts, strict=True))
    # the patients' keys spread the messages over the topic's partitions
    drain(inbound, lambda: inbound.applied + inbound.dead == 6)

    assert (inbound.applied, inbound.dead) == (5, 1)
    assert versions(settings, referrals[0]) == 1
    assert [app.load(Referral, r).status for r in referrals[1:]] == ["accepted"] * 5
    assert_dead_letter_names(settings, done, accepts[0])
    assert len([p for p in inbound.positions.values() if p]) >= 2  # more than one partition

    # and it keeps going: a later message about another patient applies
    send(settings, (patients[1], step(ARRIVED, world, referrals[1], "arr-1")))
    drain(inbound, lambda: inbound.applied == 6)
    # a restart resumes from the stored offsets: nothing again, nothing failing
    again = build_inbound_consumer(settings, app=app)
    try:
        drain(again, lambda: True, timeout=10)
        assert (again.applied, again.dead) == (0, 0)
    finally:
        again.consumer.close()

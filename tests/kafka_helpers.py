"""Helpers for the Kafka tests: per-test topics, producing partner events, reading topics.

The test broker authenticates (SASL/SCRAM-SHA-512, ACLs): the tests act as its administrator,
``JIAYI_TEST_KAFKA_USERNAME`` / ``JIAYI_TEST_KAFKA_PASSWORD`` (``make test`` reads them from the
broker's data dir). Without them, the broker is taken to be an unauthenticated one.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from psycopg import sql
from pydantic import SecretStr

from consumers.inbound import InboundConsumer
from consumers.topics import inbound_topic
from jiayi.bootstrap import create_topics, kafka_client_config
from jiayi.settings import Settings
from tests.world import World


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports no socket holds now, from the system (for a broker of a test's own,
    started right after: a fixed port in the ephemeral range may be any outgoing connection's)."""
    held = [socket.socket() for _ in range(n)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def admin_credentials(kafka_dir: Path | None = None) -> tuple[str, str] | None:
    """The test broker's administrator: from the environment, or (``kafka_dir``) the password
    file ``infra/kafka/ensure.sh`` wrote into a broker's data dir."""
    if kafka_dir is not None:
        return "jiayi-admin", (kafka_dir / "admin.password").read_text().strip()
    user = os.environ.get("JIAYI_TEST_KAFKA_USERNAME")
    password = os.environ.get("JIAYI_TEST_KAFKA_PASSWORD")
    return (user, password) if user and password else None


def with_auth(settings: Settings, credentials: tuple[str, str] | None) -> Settings:
    if credentials is None:
        return settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    user, password = credentials
    return settings.model_copy(
        update={
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_username": user,
            "kafka_password": SecretStr(password),
            "kafka_admin_username": None,
            "kafka_admin_password": None,
        }
    )


def client_config(bootstrap: str | Settings) -> dict[str, Any]:
    """Connection arguments for a test's own client: the administrator's on ``bootstrap`` (an
    address of the test broker), or those of ``bootstrap`` (settings)."""
    if isinstance(bootstrap, str):
        bootstrap = with_auth(
            Settings(kafka_bootstrap=bootstrap, kafka_security_protocol="PLAINTEXT"),
            admin_credentials(),
        )
    return kafka_client_config(bootstrap, "admin")


def exchange_settings(
    base: Settings,
    bootstrap: str,
    partitions: int = 3,
    credentials: tuple[str, str] | None = None,
) -> Settings:
    """Settings with topics of the test's own; the clients act as the administrator
    (``credentials``, default :func:`admin_credentials`)."""
    tag = uuid.uuid4().hex[:8]
    base = with_auth(base, credentials or admin_credentials())
    return base.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "partner_topic_prefix": f"t.{tag}.p.",
            "platform_topic": f"t.{tag}.platform",
            "dead_letter_topic": f"t.{tag}.dead",
            "consumer_group": f"g.{tag}",
            "kafka_partitions": partitions,
        }
    )


def source_org(value: bytes) -> uuid.UUID | None:
    """The organisation a partner CloudEvent's ``source`` names (None if it names none)."""
    try:
        source = json.loads(value)["source"]
        return uuid.UUID(source.rsplit(":", 1)[1])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def partners(world: World) -> list[uuid.UUID]:
    """The world's organisations (whose partner topics a test creates up front)."""
    return [world.center, world.other_center, world.hospital, world.other_hospital]


def send_inbound(
    settings: Settings,
    messages: Iterable[tuple[bytes | None, bytes]],
    default: uuid.UUID | None = None,
) -> None:
    """Produce partner messages, each to the inbound topic of the organisation its ``source``
    names (as a partner writes to its own topic), or of ``default`` when it names none,
    creating the topics first."""
    prefix = settings.partner_topic_prefix
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    for key, value in messages:
        sender = source_org(value) or default
        if sender is None:
            raise ValueError("name the organisation whose topic a message without source goes to")
        by_topic.setdefault(inbound_topic(prefix, sender), []).append((key, value))
    create_topics(settings, by_topic)
    producer = KafkaProducer(**client_config(settings))
    for topic, batch in by_topic.items():
        for key, value in batch:
            producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def produce(
    bootstrap: str | Settings, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
) -> None:
    producer = KafkaProducer(**client_config(bootstrap), linger_ms=5)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_all(
    bootstrap: str | Settings, topic: str, expect: int = 0, timeout: float = 30
) -> list[ConsumerRecord]:
    """Every record on the topic (at least ``expect`` of them), partition by partition."""
    consumer = KafkaConsumer(**client_config(bootstrap), enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        end = consumer.end_offsets(parts)
        for batch in consumer.poll(timeout_ms=300).values():
            out += batch
        if len(out) >= expect and all(consumer.position(p) >= end[p] for p in parts):
            break
    consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def drain(inbound: InboundConsumer, until: Callable[[], bool], timeout: float = 60) -> None:
    """Poll until ``until()`` holds (checked when a poll brings nothing new)."""
    inbound.subscribe()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not inbound.poll_once(timeout_ms=300) and until():
            return
    raise AssertionError("the consumer did not get there in time")


def count_events(url: str, schema: str, topic_suffix: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.carecoordination_events WHERE topic LIKE %s").format(
                sql.Identifier(schema)
            ),
            ("%" + topic_suffix,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or []}


def as_json(record: ConsumerRecord) -> Any:
    return json.loads(record.value)

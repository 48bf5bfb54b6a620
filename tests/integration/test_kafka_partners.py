"""``jiayi partners`` against the real broker: SCRAM users, per-partner topics and ACLs.

Each partner authenticates as ``partner-<org>`` and may only write its inbound topic and read
its outbound topic; the broker refuses anything else with an authorisation error. Removing a
partner ends its access; rotating its password ends the old one's.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from consumers.topics import inbound_topic, outbound_topic
from jiayi import kafka_access
from jiayi.bootstrap import (
    build_admin,
    build_application,
    build_inbound_consumer,
    build_relay,
    ensure_topics,
    kafka_client_config,
)
from jiayi.cli import main
from jiayi.settings import Settings
from tests.kafka_helpers import client_config, drain, exchange_settings, produce, read_all
from tests.world import build_world

pytestmark = pytest.mark.kafka

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 15) -> T:
    """``check()`` once a change has reached the broker (SCRAM users and ACLs are metadata:
    the broker applies them a moment after the admin call returns)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture
def settings(tmp_path: Any, kafka_bootstrap: str) -> Settings:
    base = exchange_settings(Settings(data_dir=tmp_path), kafka_bootstrap)
    return base.model_copy(update={"partner_topic_prefix": f"t.{uuid.uuid4().hex[:8]}.p."})


@pytest.fixture
def admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(**client_config(settings))
    yield client
    client.close()


def as_partner(settings: Settings, credentials: kafka_access.Credentials) -> dict[str, Any]:
    """Client arguments of a partner (the settings it was given, in kafka-python's names)."""
    own = settings.model_copy(
        update={
            "kafka_username": credentials.username,
            "kafka_password": SecretStr(credentials.password),
        }
    )
    return kafka_client_config(own, "consumer")


def send(config: dict[str, Any], topic: str, value: bytes) -> None:
    producer = KafkaProducer(**config, max_block_ms=8000, retries=0)
    try:
        producer.send(topic, value=value, partition=0).get(timeout=10)
    finally:
        producer.close(timeout=2)


def receive(config: dict[str, Any], topic: str, group: str | None = None) -> list[bytes]:
    """Everything on partition 0 of ``topic``; with ``group``, its offset is then committed
    for that consumer group. (A topic the client may not read fails on the offset lookup.)"""
    consumer = KafkaConsumer(**config, group_id=group, enable_auto_commit=False)
    try:
        part = TopicPartition(topic, 0)
        consumer.assign([part])
        consumer.seek_to_beginning(part)
        end = consumer.end_offsets([part])[part]
        values: list[bytes] = []
        deadline = time.monotonic() + 15
        while consumer.position(part) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in batch]
        if group is not None:
            consumer.commit()
        return values
    finally:
        consumer.close()


def refused(action: Callable[[], object]) -> BaseException:
    """The authorisation error the broker answers ``action`` with."""
    with pytest.raises((TopicAuthorizationFailedError, KafkaTimeoutError)) as caught:
        action()
    return caught.value


def authenticates(config: dict[str, Any], caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the broker accepts these credentials (a refusal is logged as such)."""
    caplog.clear()
    try:
        KafkaAdminClient(**config, bootstrap_timeout_ms=3000).close()
    except KafkaTimeoutError:
        assert "authentication" in caplog.text.lower(), caplog.text[-2000:]
        return False
    return True


def test_a_partner_writes_its_inbound_and_reads_its_outbound_topic_and_nothing_else(
    settings: Settings, admin: KafkaAdminClient
) -> None:
    h2, h3 = uuid.uuid4(), uuid.uuid4()
    h2_creds = kafka_access.add_partner(admin, settings, h2)
    h3_creds = kafka_access.add_partner(admin, settings, h3)
    h3_client = as_partner(settings, h3_creds)
    prefix = settings.partner_topic_prefix
    h2_in, h2_out = f"{prefix}{h2}.in", f"{prefix}{h2}.out"
    h3_in, h3_out = f"{prefix}{h3}.in", f"{prefix}{h3}.out"
    send(client_config(settings), h2_out, b"for H2 only")
    send(client_config(settings), h3_out, b"for H3")

    # Its own topics: write the inbound one, read the outbound one (in a group of its own).
    eventually(lambda: send(h3_client, h3_in, b"from H3"))
    assert eventually(lambda: receive(h3_client, h3_out, group=f"{h3_creds.username}.app")) == [
        b"for H3"
    ]

    # H2's topics, and reading its own inbound one: refused by the broker.
    error = refused(lambda: send(h3_client, h2_in, b"H3 pretending to be H2"))
    assert isinstance(error, TopicAuthorizationFailedError) or h2_in in str(error)
    assert isinstance(refused(lambda: receive(h3_client, h2_out)), TopicAuthorizationFailedError)
    assert isinstance(refused(lambda: receive(h3_client, h3_in)), TopicAuthorizationFailedError)
    # A consumer group not named after it: refused too.
    with pytest.raises(GroupAuthorizationFailedError):
        receive(h3_client, h3_out, group="someone-elses-group")
    # What H3 wrote reached its inbound topic; H2's inbound topic holds nothing of H3's.
    assert receive(client_config(settings), h3_in) == [b"from H3"]
    assert receive(client_config(settings), h2_in) == []

    # H2's credentials work on H2's topics.
    h2_client = as_partner(settings, h2_creds)
    assert eventually(lambda: receive(h2_client, h2_out)) == [b"for H2 only"]


def test_after_remove_the_partner_cannot_authenticate_nor_act(
    settings: Settings, admin: KafkaAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    h3 = uuid.uuid4()
    creds = kafka_access.add_partner(admin, settings, h3)
    client = as_partner(settings, creds)
    topic = f"{settings.partner_topic_prefix}{h3}.in"
    eventually(lambda: send(client, topic, b"before"))
    # Open before the removal: the ACLs are gone, so the connection can do nothing either.
    producer = KafkaProducer(**client, max_block_ms=8000, retries=0)

    kafka_access.remove_partner(admin, settings, h3)

    def stops() -> None:
        refusals = (TopicAuthorizationFailedError, SaslAuthenticationFailedError, KafkaTimeoutError)
        with pytest.raises(refusals):
            producer.send(topic, value=b"after").get(timeout=10)

    eventually(stops)
    producer.close(timeout=2)
    assert eventually(lambda: not authenticates(client, caplog) or 1 / 0)
    assert h3 not in [p.org for p in kafka_access.list_partners(admin, settings)]
    assert topic in admin.list_topics()  # kept, for audit


def test_rotate_refuses_the_old_password_and_accepts_the_new_one(
    settings: Settings, admin: KafkaAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    org = uuid.uuid4()
    old = kafka_access.add_partner(admin, settings, org)
    assert eventually(lambda: authenticates(as_partner(settings, old), caplog) or 1 / 0)
    new = kafka_access.rotate_partner(admin, org)
    assert new.password != old.password
    assert eventually(lambda: not authenticates(as_partner(settings, old), caplog) or 1 / 0)
    assert authenticates(as_partner(settings, new), caplog)
    eventually(
        lambda: send(as_partner(settings, new), f"{settings.partner_topic_prefix}{org}.in", b"x")
    )


def test_the_command_adds_lists_rotates_and_removes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings.kafka_username and settings.kafka_password
    for name, value in {
        "JIAYI_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "JIAYI_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "JIAYI_KAFKA_ADMIN_USERNAME": settings.kafka_username,
        "JIAYI_KAFKA_ADMIN_PASSWORD": settings.kafka_password.get_secret_value(),
        "JIAYI_PARTNER_TOPIC_PREFIX": settings.partner_topic_prefix,
    }.items():
        monkeypatch.setenv(name, value)
    org = uuid.uuid4()
    assert main(["partners", "--json", "add", str(org)]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["sasl.username"] == f"partner-{org}"
    assert given["inbound.topic"] == f"{settings.partner_topic_prefix}{org}.in"
    assert given["security.protocol"] == settings.kafka_security_protocol
    assert main(["partners", "add", str(org)]) == 1  # exists: rotate instead
    capsys.readouterr()
    assert main(["partners", "--json", "list"]) == 0
    listed = {p["org"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed[str(org)]["inbound_exists"] and listed[str(org)]["outbound_exists"]
    assert main(["partners", "--json", "rotate", str(org)]) == 0
    assert json.loads(capsys.readouterr().out)["sasl.password"] != given["sasl.password"]
    assert main(["partners", "remove", str(org)]) == 0
    capsys.readouterr()
    assert main(["partners", "--json", "list"]) == 0
    assert str(org) not in {p["org"] for p in json.loads(capsys.readouterr().out)}


@pytest.mark.postgres
def test_the_consumer_and_the_relay_run_as_their_own_least_privilege_principals(
    postgres_settings: Settings, kafka_bootstrap: str
) -> None:
    """``jiayi partners services`` makes jiayi-consumer and jiayi-relay: the consumer reads
    the inbound topics of the partners added, commits in its group and writes dead letters;
    the relay writes the outbound topics of the partners added and the platform topic; neither
    can do the other's work, and an organisation that is no partner receives nothing."""
    settings = exchange_settings(postgres_settings, kafka_bootstrap)
    app = build_application(settings)
    world = build_world(app)
    world.patient()  # registered at the center: an event for the center to receive
    admin = build_admin(settings)
    try:
        made = {c.username: c for c in kafka_access.setup_services(admin, settings, rotate=True)}
        kafka_access.add_partner(admin, settings, world.center)
    finally:
        admin.close()

    def acting_as(user: str) -> Settings:
        return settings.model_copy(
            update={"kafka_username": user, "kafka_password": SecretStr(made[user].password)}
        )

    as_consumer, as_relay = acting_as(kafka_access.CONSUMER), acting_as(kafka_access.RELAY)
    for own in (as_consumer, as_relay):  # `jiayi consume` / `publish` start with it: no error
        eventually(lambda own=own: ensure_topics(own))
    relay = build_relay(as_relay, app=build_application(settings))
    eventually(relay.publish_once)
    while relay.publish_once():
        pass
    relay.close()
    platform = settings.platform_topic or ""
    assert len(read_all(settings, platform, app.max_position())) == app.max_position()
    prefix = settings.partner_topic_prefix
    # the center (a partner) received its own events; the hospital, no partner, has no topic
    assert read_all(settings, outbound_topic(prefix, world.center), 1)
    topics = build_admin(settings)
    try:
        assert outbound_topic(prefix, world.hospital) not in set(topics.list_topics())
    finally:
        topics.close()

    inbound = inbound_topic(prefix, world.center)
    produce(settings, inbound, [(b"k", b"not json")])
    consumer = build_inbound_consumer(as_consumer, app=build_application(settings))
    drain(consumer, lambda: consumer.dead >= 1)
    consumer.consumer.close()
    assert [d.value for d in read_all(settings, settings.dead_letter_topic, 1)] == [b"not json"]

    consumer_client = kafka_client_config(as_consumer, "consumer")
    relay_client = kafka_client_config(as_relay, "relay")
    refused(lambda: send(consumer_client, platform, b"forged domain event"))
    refused(lambda: send(relay_client, inbound, b"forged partner message"))
    assert isinstance(
        refused(lambda: receive(relay_client, inbound)), TopicAuthorizationFailedError
    )
    app.close()


@pytest.mark.postgres
def test_seals_are_published_by_the_relay_and_read_back_by_the_auditor(
    postgres_settings: Settings, kafka_bootstrap: str
) -> None:
    """The relay's principal publishes each seal to the audit topic (the consumer's may not);
    `jiayi audit verify --seals kafka` reads them back, and a seal gone from the database is
    found there."""
    from audit import seals as sealing
    from audit.verify import verify

    settings = exchange_settings(postgres_settings, kafka_bootstrap).model_copy(
        update={"audit_topic": f"t.{uuid.uuid4().hex[:8]}.audit"}
    )
    app = build_application(settings)
    build_world(app).patient()
    admin = build_admin(settings)
    try:
        made = {c.username: c for c in kafka_access.setup_services(admin, settings, rotate=True)}
    finally:
        admin.close()
    as_relay = settings.model_copy(
        update={
            "kafka_username": kafka_access.RELAY,
            "kafka_password": SecretStr(made[kafka_access.RELAY].password),
        }
    )
    as_consumer = settings.model_copy(
        update={
            "kafka_username": kafka_access.CONSUMER,
            "kafka_password": SecretStr(made[kafka_access.CONSUMER].password),
        }
    )
    key = sealing.create_key(settings.data_dir / "seal-key.pem")
    sealer = sealing.Sealer(as_relay, key, publish=sealing.kafka_publisher(as_relay))
    try:
        seal = eventually(lambda: sealer.seal(force=True))
    finally:
        sealer.close()
    assert seal is not None
    published = eventually(lambda: sealing.read_topic(settings))
    assert seal in published
    refused(lambda: send(kafka_client_config(as_consumer, "consumer"), settings.audit_topic, b"x"))

    store = sealing.open_store(settings)
    try:
        store.execute(f"DELETE FROM {sealing.SealBook(store).tables.seals}")
        report = verify(store, elsewhere=published, public=key.public_key())
    finally:
        store.close()
    assert [(f.position, f.kind) for f in report.findings] == [(seal.position, "seal-missing")]
    app.close()

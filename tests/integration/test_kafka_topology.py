"""Per-partner topics on a real broker: the acting organisation comes from the inbound topic,
and the relay routes each event to the partners related to it at that moment, with the fields
each may have."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from consumers.inbound import InboundConsumer
from consumers.messages import partner_event
from consumers.topics import inbound_topic, outbound_topic
from domain.application import CareCoordination
from domain.referrals import Referral
from jiayi.bootstrap import (
    build_inbound_consumer,
    build_relay,
    ensure_topics,
)
from jiayi.settings import Settings
from tests.kafka_helpers import (
    as_json,
    drain,
    exchange_settings,
    headers,
    partners,
    produce,
    read_all,
)
from tests.schemas import validate_outbound
from tests.world import World, build_world

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ACCEPTED = "cn.jiayi.partner.referral.accepted.v1"


@pytest.fixture
def settings(postgres_settings: Settings, kafka_bootstrap: str) -> Settings:
    # the platform topic off, as deployed by default
    s = exchange_settings(postgres_settings, kafka_bootstrap).model_copy(
        update={"platform_topic": None}
    )
    ensure_topics(s)
    return s


@pytest.fixture
def world(settings: Settings, app: CareCoordination) -> World:
    world = build_world(app)
    ensure_topics(settings, partners(world))
    return world


@pytest.fixture
def inbound(settings: Settings, app: CareCoordination) -> Iterator[InboundConsumer]:
    consumer = build_inbound_consumer(settings, app=app)
    yield consumer
    consumer.consumer.close()


def test_a_message_claiming_another_organisation_than_its_topics_is_dead_lettered(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    referral = world.referral(patient)  # addressed to H2 (world.hospital)
    h2, h3 = world.hospital, world.other_hospital
    forged = partner_event(ACCEPTED, h2, "forged-1", {"referral_id": str(referral)})
    genuine = partner_event(ACCEPTED, h2, "his-1", {"referral_id": str(referral)})
    bootstrap = settings.kafka_bootstrap or ""
    key = str(patient).encode()
    produce(bootstrap, inbound_topic(settings.partner_topic_prefix, h3), [(key, forged)])
    drain(inbound, lambda: inbound.dead >= 1)

    assert inbound.applied == 0
    assert app.load(Referral, referral).status == "requested"
    [dead] = read_all(bootstrap, settings.dead_letter_topic, 1)
    assert dead.value == forged
    assert headers(dead)["jiayi.error.code"] == "source-mismatch"
    assert headers(dead)["__connect.errors.topic"] == inbound_topic(
        settings.partner_topic_prefix, h3
    )

    # the same message in H2's own topic applies
    produce(bootstrap, inbound_topic(settings.partner_topic_prefix, h2), [(key, genuine)])
    drain(inbound, lambda: inbound.applied >= 1)
    assert app.load(Referral, referral).status == "accepted"


def received(settings: Settings, org: UUID) -> list[dict[str, Any]]:
    topic = outbound_topic(settings.partner_topic_prefix, org)
    records = read_all(settings.kafka_bootstrap or "", topic, 0, timeout=10)
    return sorted((as_json(r) for r in records), key=lambda m: int(m["sequence"]))


def test_each_partner_receives_what_its_relations_admit_and_no_more(
    settings: Settings, app: CareCoordination, world: World
) -> None:
    patient = world.contracted_patient(tags=("hypertension",))
    app.tag_patient(patient, tag="disability", actor=world.gp)
    mine = world.referral(patient)  # to H2
    theirs = app.request_referral(
        patient,
        hospital_id=world.other_hospital,
        department="cardiology",
        reason="second opinion",
        diagnosis="I10",
        urgency="routine",
        actor=world.gp,
    ).id
    app.accept_referral(mine, actor=world.hospital_staff, note="bed 12 held")
    app.record_arrival(mine, actor=world.hospital_staff)
    app.reject_referral(
        theirs, reason_code="no_capacity", note="full until May", actor=world.other_hospital_staff
    )
    cancelled = world.referral(patient)  # to H2, then cancelled by the center
    app.cancel_referral(cancelled, reason="the family chose another hospital", actor=world.gp)
    other_patient = world.patient(name="李四", serial=7)

    relay = build_relay(settings, app=app)
    while relay.publish_once():
        pass
    relay.close()

    # H2: its referrals and their steps, nothing else
    h2 = received(settings, world.hospital)
    assert {m["subject"] for m in h2} == {str(mine), str(cancelled)}
    assert [m["type"] for m in h2 if m["subject"] == str(mine)] == [
        "cn.jiayi.referral.requested.v2",
        "cn.jiayi.referral.accepted.v1",
        "cn.jiayi.referral.patient-arrived.v1",
    ]
    by_type = {m["type"]: m["data"] for m in h2}
    assert by_type["cn.jiayi.referral.requested.v2"]["contract_id"] is None  # not the contract
    assert by_type["cn.jiayi.referral.requested.v2"]["team_id"] is None
    assert by_type["cn.jiayi.referral.requested.v2"]["diagnoses"] == [{"code": None, "text": "I10"}]
    assert by_type["cn.jiayi.referral.accepted.v1"]["note"] == "bed 12 held"  # its own text
    assert by_type["cn.jiayi.referral.cancelled.v1"]["reason"] == ""  # the center's text
    for m in h2:
        validate_outbound(m)
        assert m["partitionkey"] == str(patient)

    # H3: only the referral addressed to it, its own rejection note included
    h3 = received(settings, world.other_hospital)
    assert [(m["subject"], m["type"]) for m in h3] == [
        (str(theirs), "cn.jiayi.referral.requested.v2"),
        (str(theirs), "cn.jiayi.referral.rejected.v1"),
    ]
    assert h3[1]["data"]["note"] == "full until May"

    # the center: every event of its patients, without personal data, in log order
    center = received(settings, world.center)
    types = [m["type"] for m in center if m["partitionkey"] == str(patient)]
    for expected in (
        "cn.jiayi.patient.registered.v1",
        "cn.jiayi.contract.signed.v1",
        "cn.jiayi.patient.tagged.v1",
        "cn.jiayi.referral.requested.v2",
        "cn.jiayi.referral.rejected.v1",
        "cn.jiayi.referral.cancelled.v1",
    ):
        assert expected in types
    assert {m["subject"] for m in center} >= {str(mine), str(theirs), str(other_patient)}
    registered = next(m for m in center if m["type"] == "cn.jiayi.patient.registered.v1")
    assert "name" not in registered["data"] and "national_id" not in registered["data"]
    assert [int(m["sequence"]) for m in center] == sorted(int(m["sequence"]) for m in center)
    cancel = next(m for m in center if m["type"] == "cn.jiayi.referral.cancelled.v1")
    assert cancel["data"]["reason"] == "the family chose another hospital"

    # the other center: nothing
    assert received(settings, world.other_center) == []


def test_a_transfer_moves_the_patients_events_to_the_new_center_and_a_restart_keeps_routing(
    settings: Settings, app: CareCoordination, world: World
) -> None:
    patient = world.patient()
    relay = build_relay(settings, app=app)
    while relay.publish_once():
        pass
    world.transfer_to_other_center(patient)
    app.tag_patient(patient, tag="disability", actor=world.other_admin)

    def away(*_: object) -> None:
        raise RuntimeError("the database went away")  # sent, but the position is not stored

    relay.recorder.insert_tracking = away  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        relay.publish_once()
    del relay.recorder.insert_tracking  # type: ignore[attr-defined]
    while relay.publish_once():  # the same relay again: its fold was undone, not advanced
        pass
    relay.close()
    app.tag_patient(patient, tag="registered_poor", actor=world.other_admin)

    restarted = build_relay(settings, app=app)  # folds the relations from the log
    while restarted.publish_once():
        pass
    restarted.close()

    old = [m["type"] for m in received(settings, world.center)]
    new = [m["type"] for m in received(settings, world.other_center)]
    assert "cn.jiayi.patient.transferred.v1" in old  # the end of its relation still reaches it
    assert "cn.jiayi.patient.tagged.v1" not in old
    assert new.index("cn.jiayi.patient.transferred.v1") < new.index("cn.jiayi.patient.tagged.v1")
    tags = [m["data"]["tag"] for m in received(settings, world.other_center) if "tag" in m["data"]]
    assert tags[-1] == "registered_poor" and "disability" in tags
    assert "cn.jiayi.patient.transfer-requested.v1" not in new  # asking gives nothing

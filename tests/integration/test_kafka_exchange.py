"""Partner events in and domain events out over a real Apache Kafka broker, on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from jsonschema import Draft202012Validator
from pydantic import SecretStr

from consumers.inbound import InboundConsumer
from consumers.messages import partner_event
from consumers.topics import inbound_topic
from domain.application import CareCoordination
from domain.followups import FollowUps
from domain.patients import Patient
from domain.referrals import Referral
from jiayi.bootstrap import (
    build_application,
    build_inbound_consumer,
    build_projections,
    build_relay,
    ensure_topics,
)
from jiayi.settings import Settings
from projections.queries import Page, Scope
from tests.conftest import Clock
from tests.kafka_helpers import (
    as_json,
    drain,
    exchange_settings,
    headers,
    read_all,
    send_inbound,
)
from tests.schemas import validate_outbound
from tests.world import World, build_world, national_id

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]

ACCEPTED = "cn.jiayi.partner.referral.accepted.v1"
REJECTED = "cn.jiayi.partner.referral.rejected.v1"
ARRIVED = "cn.jiayi.partner.patient.arrived.v1"
DISCHARGED = "cn.jiayi.partner.patient.discharged.v1"
FOLLOWUP = "cn.jiayi.partner.followup.recorded.v2"
REQUESTED = "cn.jiayi.partner.referral.requested.v1"


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


def send(settings: Settings, *messages: tuple[UUID, bytes], default: UUID | None = None) -> None:
    """Each message to its source's inbound topic (``default``'s if it names none)."""
    send_inbound(settings, [(str(key).encode(), value) for key, value in messages], default)


def discharge(world: World, referral: UUID) -> dict[str, object]:
    return {
        "referral_id": str(referral),
        "staff_id": "ward-7-doctor",
        "summary": "血压控制良好，出院",
        "prescriptions": [{"drug": "amlodipine", "dose": "5 mg", "frequency": "qd"}],
        "rehabilitation": "低盐饮食，每周监测血压",
        "follow_up_due": (world.today + timedelta(days=10)).isoformat(),
    }


def test_a_hospital_accepts_and_discharges_and_the_patients_events_go_out_in_order(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    referral = world.referral(patient)
    at = world.now()
    send(
        settings,
        (
            patient,
            partner_event(ACCEPTED, world.hospital, "his-1", {"referral_id": str(referral)}, at),
        ),
        (
            patient,
            partner_event(ARRIVED, world.hospital, "his-2", {"referral_id": str(referral)}, at),
        ),
        (
            patient,
            partner_event(DISCHARGED, world.hospital, "his-3", discharge(world, referral), at),
        ),
    )
    drain(inbound, lambda: app.load(Referral, referral).status == "returned")

    stored = app.load(Referral, referral)
    assert stored.return_plan is not None
    assert stored.return_plan["prescriptions"][0]["drug"] == "amlodipine"
    followups = app.load(FollowUps, FollowUps.id_for(patient))
    assert any(o["reason"] == "return_to_community" for o in followups.obligations.values())
    history = [type(e).__qualname__ for e in app.events.get(referral)]
    assert history == [
        "Referral.Requested",
        "Referral.Accepted",
        "Referral.PatientArrived",
        "Referral.ReturnedToCommunity",
    ]
    accepted = app.events.get(referral)
    assert list(accepted)[1].actor.org_id == world.hospital  # type: ignore[attr-defined]

    relay = build_relay(settings, app=app)
    while relay.publish_once():
        pass
    relay.close()
    records = read_all(
        settings.kafka_bootstrap or "", settings.platform_topic or "", app.max_position()
    )
    mine = [as_json(r) for r in records if r.key == str(patient).encode()]
    positions = [int(m["sequence"]) for m in mine]
    assert positions == sorted(positions)
    assert len({r.partition for r in records if r.key == str(patient).encode()}) == 1
    types = [m["type"] for m in mine]
    for expected in (
        "cn.jiayi.patient.registered.v1",
        "cn.jiayi.contract.signed.v1",
        "cn.jiayi.referral.requested.v2",
        "cn.jiayi.referral.accepted.v1",
        "cn.jiayi.referral.patient-arrived.v1",
        "cn.jiayi.referral.returned-to-community.v2",
    ):
        assert expected in types
    assert types.index("cn.jiayi.referral.accepted.v1") < types.index(
        "cn.jiayi.referral.returned-to-community.v2"
    )
    assert {m["id"] for m in mine} == {f"carecoordination:{p}" for p in positions}
    schema = json.loads((ROOT / "consumers/schemas/outbound/domain-event.json").read_text())
    for m in mine:
        Draft202012Validator(schema).validate(m)
    # every message names the published schema of its type and version, and validates
    for m in [as_json(r) for r in records]:
        assert m["dataschema"].endswith(f"/outbound/{m['type']}.json")
        validate_outbound(m)
    assert {str(h) for h in headers(records[0])} >= {"content-type"}


def test_a_hospitals_acceptance_and_discharge_appear_in_the_patients_timeline(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    referral = world.referral(patient)
    at = world.now()
    send(
        settings,
        (
            patient,
            partner_event(ACCEPTED, world.hospital, "tl-1", {"referral_id": str(referral)}, at),
        ),
        (
            patient,
            partner_event(ARRIVED, world.hospital, "tl-2", {"referral_id": str(referral)}, at),
        ),
        (
            patient,
            partner_event(DISCHARGED, world.hospital, "tl-3", discharge(world, referral), at),
        ),
    )
    drain(inbound, lambda: app.load(Referral, referral).status == "returned")

    views = build_projections(settings, app)
    try:
        assert views.queries.wait_for(app.max_position(), timeout=30)
        center = Scope(org_id=world.center, org_kind="community_center")
        entries = views.queries.timeline(center, patient, page=Page(limit=100)) or []
    finally:
        views.close()
    steps = [
        e
        for e in entries
        if e.get("referral_id") == referral.hex or e.get("referral_id") == str(referral)
    ]
    kinds = [e["kind"] for e in steps]
    assert kinds == [
        "referral.requested",
        "referral.accepted",
        "referral.arrived",
        "return.returned",
    ]
    by_hospital = [e for e in steps if e["kind"] in ("referral.accepted", "return.returned")]
    assert {e["org_id"] for e in by_hospital} <= {world.hospital.hex, str(world.hospital)}
    assert all(e["org_id"] for e in by_hospital)


def test_bad_messages_go_to_dead_letters_and_good_ones_around_them_apply(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer
) -> None:
    patient = world.contracted_patient()
    first, second, third = (world.referral(patient) for _ in range(3))
    h = world.hospital
    stranger = uuid4()
    bad = [
        (b"{not json", "malformed-message"),
        (partner_event("cn.jiayi.partner.referral.teleported.v1", h, "x1", {}), "unknown-type"),
        (partner_event(ACCEPTED, h, "x2", {"referral": str(second)}), "schema-violation"),
        (partner_event(ACCEPTED, stranger, "x3", {"referral_id": str(second)}), "unknown-source"),
        (
            partner_event(ACCEPTED, world.other_hospital, "x4", {"referral_id": str(second)}),
            "not-found",
        ),
        (
            partner_event(
                REJECTED, h, "x5", {"referral_id": str(first), "reason_code": "no_capacity"}
            ),
            "referral-already-accepted",
        ),
        # an absent referral: the same dead letter as another hospital's (x4)
        (partner_event(ACCEPTED, h, "x6", {"referral_id": str(uuid4())}), "not-found"),
    ]
    send(
        settings,
        (patient, partner_event(ACCEPTED, h, "ok-1", {"referral_id": str(first)})),
        *[(patient, value) for value, _ in bad[:3]],
        (patient, partner_event(ACCEPTED, h, "ok-2", {"referral_id": str(second)})),
        *[(patient, value) for value, _ in bad[3:]],
        (patient, partner_event(ACCEPTED, h, "ok-3", {"referral_id": str(third)})),
        default=h,  # the malformed one: in H's topic
    )
    drain(inbound, lambda: inbound.dead >= len(bad) and inbound.applied >= 3)

    assert [app.load(Referral, r).status for r in (first, second, third)] == ["accepted"] * 3
    # x3 and x4 come from other organisations' topics: the order holds per topic
    found = read_all(settings.kafka_bootstrap or "", settings.dead_letter_topic, len(bad))
    by_value = {d.value: d for d in found}
    assert len(found) == len(by_value) == len(bad)
    dead = [by_value[value] for value, _ in bad]
    assert [headers(d)["jiayi.error.code"] for d in dead] == [code for _, code in bad]
    assert all(d.key == str(patient).encode() for d in dead)
    first_dead = headers(dead[0])
    assert first_dead["__connect.errors.topic"] == inbound_topic(settings.partner_topic_prefix, h)
    assert first_dead["__connect.errors.offset"] == "1"
    assert first_dead["__connect.errors.exception.message"].startswith("not JSON")
    reason = ("jiayi.error.code", "__connect.errors.exception.class.name")
    reason += ("__connect.errors.exception.message",)
    foreign, absent = ([headers(dead[i])[k] for k in reason] for i in (4, 6))
    assert (
        foreign
        == absent
        == [
            "not-found",
            "domain.common.NotFound",
            "nothing with that id is visible to you",
        ]
    )


def test_a_redelivered_or_republished_message_has_no_further_effect(
    settings: Settings, app: CareCoordination, world: World, inbound: InboundConsumer, clock: Clock
) -> None:
    patient = world.contracted_patient()
    referral = world.referral(patient)
    c = world.center
    visit = {"patient_id": str(patient), "on": world.today.isoformat(), "kind": "phone"}
    accept = partner_event(ACCEPTED, world.hospital, "dup-1", {"referral_id": str(referral)})
    followup = partner_event(FOLLOWUP, c, "dup-2", visit)
    send(settings, (patient, accept), (patient, followup), (patient, accept))
    drain(inbound, lambda: inbound.applied >= 2)
    send(settings, (patient, followup), (patient, accept))  # re-published later
    # The same CloudEvent (source + id) again, though its data names another patient: the
    # command itself would succeed, and the inbox still stops it.
    other = world.contracted_patient()
    reused = partner_event(FOLLOWUP, c, "dup-2", {**visit, "patient_id": str(other)})
    fresh = partner_event(FOLLOWUP, c, "dup-3", {**visit, "patient_id": str(other)})
    tomorrow = (world.today + timedelta(days=1)).isoformat()
    future = partner_event(
        FOLLOWUP, c, "dup-4", {**visit, "patient_id": str(other), "on": tomorrow}
    )
    send(settings, (other, reused), (other, fresh), (other, future))
    drain(inbound, lambda: inbound.positions_total() >= 8)

    assert [type(e).__qualname__ for e in app.events.get(referral)].count("Referral.Accepted") == 1
    assert len(app.load(FollowUps, FollowUps.id_for(patient)).visits) == 1
    assert len(app.load(FollowUps, FollowUps.id_for(other)).visits) == 1
    assert inbound.applied == 3
    # the batch with the reused id ran again: the visit in the future is dead-lettered once
    assert inbound.dead == 1
    dead = read_all(settings.kafka_bootstrap or "", settings.dead_letter_topic, 1, timeout=5)
    assert [d.value for d in dead] == [future]

    # A fresh member of the group (a restart) resumes from the stored offsets: nothing again.
    again = build_inbound_consumer(settings, app=app)
    drain(again, lambda: True, timeout=10)
    assert again.applied == 0
    again.consumer.close()


def test_a_change_by_another_writer_between_batches_is_not_lost(
    settings: Settings,
    app: CareCoordination,
    world: World,
    inbound: InboundConsumer,
    clock: Clock,
) -> None:
    """The consumer keeps aggregates between batches; a write from elsewhere (the API) in
    between makes its next batch conflict, reload and apply on top of that write."""
    patient = world.contracted_patient()

    def visit(n: int) -> bytes:
        data = {"patient_id": str(patient), "on": world.today.isoformat(), "kind": "phone"}
        return partner_event(FOLLOWUP, world.center, f"visit-{n}", data, world.now())

    send(settings, (patient, visit(1)))
    drain(inbound, lambda: len(app.load(FollowUps, FollowUps.id_for(patient)).visits) == 1)

    elsewhere = build_application(settings, clock=clock)
    try:
        elsewhere.record_follow_up(patient, on=world.today, kind="face_to_face", actor=world.gp)
    finally:
        elsewhere.close()

    send(settings, (patient, visit(2)))
    drain(inbound, lambda: len(app.load(FollowUps, FollowUps.id_for(patient)).visits) == 3)
    assert inbound.dead == 0


def test_a_patients_personal_data_is_not_published_even_when_encrypted_at_rest(
    settings: Settings, clock: Clock
) -> None:
    from eventsourcing.cipher import AESCipher

    key = SecretStr(AESCipher.create_key(16))
    encrypted = settings.model_copy(update={"cipher_key": key})
    app = build_application(encrypted, clock=clock)
    try:
        world = build_world(app)
        patient = world.patient(name="王秀英", birth=date(1950, 3, 4), tags=("hypertension",))
        relay = build_relay(encrypted, app=app)
        while relay.publish_once():
            pass
        relay.close()
    finally:
        app.close()
    records = read_all(encrypted.kafka_bootstrap or "", encrypted.platform_topic or "", 1)
    mine = [r for r in records if r.key == str(patient).encode()]
    for secret in ("王秀英", national_id(date(1950, 3, 4)), "13800000000", "1950-03-04"):
        assert all(secret.encode() not in r.value for r in mine), secret
    [registered] = [as_json(r) for r in mine if b"cn.jiayi.patient.registered.v1" in r.value]
    assert registered["subject"] == str(patient)
    data = registered["data"]
    assert (data["sex"], data["birth_year"], data["district"]) == ("F", 1950, "鼓楼区")
    assert data["center_id"] == str(world.center)
    assert not {"name", "national_id", "phone", "birth_date"} & set(data)
    tagged = [as_json(r)["data"] for r in mine if b"cn.jiayi.patient.tagged.v1" in r.value]
    assert [t["tag"] for t in tagged] == ["hypertension"]
    schema = json.loads((ROOT / "consumers/schemas/outbound/domain-event.json").read_text())
    Draft202012Validator(schema).validate(registered)
    validate_outbound(registered)
    leaky = {**registered, "data": {**data, "national_id": national_id(date(1950, 3, 4))}}
    assert not Draft202012Validator(schema).is_valid(leaky)


def test_a_patient_read_from_the_cache_is_as_recorded_since_by_another_writer(
    settings: Settings,
    app: CareCoordination,
    world: World,
    inbound: InboundConsumer,
    clock: Clock,
) -> None:
    """The consumer keeps aggregates between batches. One a batch only reads is not checked
    when the batch is recorded: a contract terminated through the API in between must still
    stop the next partner referral."""
    patient = world.contracted_patient()
    contract = app.load(Patient, patient).contract_id
    assert contract is not None

    def referral(n: int) -> bytes:
        data = {
            "patient_id": str(patient),
            "hospital_id": str(world.hospital),
            "department": "cardiology",
            "reason": "血压控制不佳",
            "diagnosis": "I10",
            "urgency": "routine",
            "staff_id": "gp-1",
        }
        return partner_event(REQUESTED, world.center, f"referral-{n}", data, world.now())

    send(settings, (patient, referral(1)))
    drain(inbound, lambda: inbound.applied + inbound.dead == 1)
    assert (inbound.applied, patient in inbound.cache) == (1, True)

    elsewhere = build_application(settings, clock=clock)
    try:
        elsewhere.terminate_contract(contract, reason="moved to another city", actor=world.gp)
    finally:
        elsewhere.close()

    send(settings, (patient, referral(2)))
    drain(inbound, lambda: inbound.applied + inbound.dead == 2)
    assert (inbound.applied, inbound.dead) == (1, 1)
    [dead] = read_all(settings.kafka_bootstrap or "", settings.dead_letter_topic, 1)
    assert headers(dead)["jiayi.error.code"] == "contract-not-active"

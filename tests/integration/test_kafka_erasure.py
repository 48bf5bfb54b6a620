"""Issue 14 over a real broker and the real relay: an erased patient's partners get the
erasure notice (``cn.jiayi.patient.erased.v1``) on their topics, every organisation that was
ever sent an event about the patient and nobody else, and nothing of the erased personal data
leaves afterwards, also when the log is published again. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from consumers.outbound import Relay
from consumers.topics import outbound_topic
from domain.application import CareCoordination
from domain.common import ADMINISTRATION, Actor
from eventstore.personal import ERASED
from jiayi.bootstrap import build_application, build_relay, ensure_topics, erase_patient
from jiayi.settings import Settings
from tests.conftest import Clock
from tests.kafka_helpers import as_json, exchange_settings, partners, read_all
from tests.schemas import validate_outbound
from tests.world import World, build_world, national_id

pytestmark = pytest.mark.kafka

ERASED_TYPE = "cn.jiayi.patient.erased.v1"
REQUESTED = "cn.jiayi.referral.requested.v2"
ADMIN = Actor("admin-1", ADMINISTRATION)
NAME, BIRTH, PHONE = "王秀英", datetime(1950, 3, 4).date(), "13800000000"
DIAGNOSIS = "I10 原发性高血压，伴左心室肥厚"
REASON = "血压控制不佳，夜间头痛"
NOTE = "复诊时诉咳嗽三天"
GROUND = "retention period ended (record 2011-0457)"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Settings:
    """Topics of the test's own, on the embedded SQLite default and on PostgreSQL."""
    store = "sqlite_settings" if request.param == "sqlite" else "postgres_settings"
    base: Settings = request.getfixturevalue(store)
    s = exchange_settings(base, kafka_bootstrap)
    ensure_topics(s)
    return s


@pytest.fixture
def world(settings: Settings, app: CareCoordination) -> World:
    world = build_world(app)
    ensure_topics(settings, partners(world))
    return world


def publish_all(relay: Relay) -> None:
    while relay.publish_once():
        pass


def inboxes(settings: Settings, world: World) -> dict[UUID, list[bytes]]:
    """What each of the world's organisations finds on its outbound topic (one read each)."""
    found: dict[UUID, list[bytes]] = {}
    for org in partners(world):
        topic = outbound_topic(settings.partner_topic_prefix, org)
        records = read_all(settings.kafka_bootstrap or "", topic, 0, timeout=10)
        for r in records:
            assert r.key == as_json(r)["partitionkey"].encode()
        found[org] = [r.value for r in records]
    return found


def parsed(values: list[bytes]) -> list[dict[str, Any]]:
    """The messages, in log order."""
    return sorted((json.loads(v) for v in values), key=lambda m: int(m["sequence"]))


def notices(messages: list[dict[str, Any]], patient: UUID) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == ERASED_TYPE and m["subject"] == str(patient)]


def history(world: World) -> tuple[UUID, UUID, UUID]:
    """A contracted patient referred to the hospital, the referral closed (rejected) long ago,
    and another patient referred to the other hospital: (patient, referral, other patient)."""
    app = world.app
    patient = world.patient(name=NAME, birth=BIRTH)
    app.sign_contract(
        patient, team_id=world.team, package="basic", start=world.today, actor=world.gp
    )
    referral = app.request_referral(
        patient,
        hospital_id=world.hospital,
        department="cardiology",
        reason=REASON,
        diagnosis=DIAGNOSIS,
        urgency="routine",
        actor=world.gp,
    ).id
    app.reject_referral(
        referral, reason_code="no_capacity", note="full until May", actor=world.hospital_staff
    )
    other = world.contracted_patient(serial=7)
    app.request_referral(
        other,
        hospital_id=world.other_hospital,
        department="cardiology",
        reason="second opinion",
        diagnosis="I20",
        urgency="routine",
        actor=world.gp,
    )
    return patient, referral, other


def assert_none_of(inbox: dict[UUID, list[bytes]], *secrets: str) -> None:
    for org, values in inbox.items():
        for value in values:
            for secret in secrets:
                assert secret.encode() not in value, (org, secret)


def test_every_partner_that_heard_of_the_patient_gets_the_erasure_notice_and_no_one_else(
    settings: Settings, app: CareCoordination, world: World, clock: Clock
) -> None:
    patient, referral, other = history(world)
    relay = build_relay(settings, app=app)
    publish_all(relay)
    relay.close()  # the relay is restarted (a deploy) before the erasure
    before = parsed(inboxes(settings, world)[world.hospital])
    [requested] = [m for m in before if m["type"] == REQUESTED]
    assert requested["data"]["diagnoses"][0]["text"] == DIAGNOSIS  # the hospital had it

    clock.advance(days=400)
    erased_at = clock.now
    position = erase_patient(app, patient, reason=GROUND, actor=ADMIN)

    restarted = build_application(settings, clock=clock)  # a fresh process: folds the log
    try:
        relay = build_relay(settings, app=restarted)
        publish_all(relay)
        relay.close()
    finally:
        restarted.close()

    inbox = inboxes(settings, world)
    for org in (world.center, world.hospital):  # the home center; the referral's hospital
        [notice] = notices(parsed(inbox[org]), patient)
        validate_outbound(notice)
        assert notice["partitionkey"] == str(patient)
        assert notice["sequence"] == str(position)
        assert notice["data"]["reason"] == GROUND
        assert notice["data"]["actor"] == {"staff_id": "admin-1", "org_id": str(ADMINISTRATION)}
        assert datetime.fromisoformat(notice["data"]["at"]) == erased_at
        assert datetime.fromisoformat(notice["time"]) == erased_at
    # the other hospital heard of another patient only; the other center of nobody
    assert {m["partitionkey"] for m in parsed(inbox[world.other_hospital])} == {str(other)}
    for org in (world.other_hospital, world.other_center):
        assert [m for m in parsed(inbox[org]) if m["type"] == ERASED_TYPE] == []
    assert_none_of(inbox, NAME, national_id(BIRTH), PHONE)

    # Published again from the start (another topic prefix: a relay of its own, position 0):
    # the patient's earlier events carry no erased text, and the notice reaches the same.
    again = settings.model_copy(
        update={"partner_topic_prefix": settings.partner_topic_prefix + "r."}
    )
    ensure_topics(again, partners(world))
    relay = build_relay(again, app=app)
    publish_all(relay)
    relay.close()
    inbox = inboxes(again, world)
    hospital = parsed(inbox[world.hospital])
    [requested] = [m for m in hospital if m["type"] == REQUESTED]
    assert requested["subject"] == str(referral)
    assert (requested["data"]["diagnoses"][0]["text"], requested["data"]["reason"]) == (
        ERASED,
        ERASED,
    )
    assert len(notices(hospital, patient)) == 1
    assert len(notices(parsed(inbox[world.center]), patient)) == 1
    assert notices(parsed(inbox[world.other_hospital]), patient) == []
    assert notices(parsed(inbox[world.other_center]), patient) == []
    assert_none_of(inbox, NAME, national_id(BIRTH), PHONE, DIAGNOSIS, REASON)


def test_a_transferred_patients_previous_center_gets_the_notice_too(
    settings: Settings, app: CareCoordination, world: World
) -> None:
    patient = world.patient(name=NAME, birth=BIRTH)
    world.transfer_to_other_center(patient)
    relay = build_relay(settings, app=app)
    publish_all(relay)
    erase_patient(app, patient, reason=GROUND, actor=ADMIN)
    publish_all(relay)
    relay.close()
    inbox = inboxes(settings, world)
    for org in (world.center, world.other_center):
        assert len(notices(parsed(inbox[org]), patient)) == 1
    assert inbox[world.hospital] == inbox[world.other_hospital] == []


def test_a_running_relay_sends_no_text_erased_by_another_process_meanwhile(
    settings: Settings, app: CareCoordination, world: World, clock: Clock
) -> None:
    """The relay read the patient's events before (their key in its memory); a visit recorded
    then is still unpublished when ``jiayi patients erase`` runs elsewhere: it goes out
    without its note, then the notice."""
    patient, _, _ = history(world)
    relay = build_relay(settings, app=app)
    publish_all(relay)
    app.record_follow_up(patient, on=world.today, kind="phone", actor=world.gp, note=NOTE)

    elsewhere = build_application(settings, clock=clock)
    try:
        erase_patient(elsewhere, patient, reason=GROUND, actor=ADMIN)
    finally:
        elsewhere.close()
    publish_all(relay)
    relay.close()

    inbox = inboxes(settings, world)
    center = parsed(inbox[world.center])
    [visit] = [m for m in center if m["type"] == "cn.jiayi.follow-ups.visit-recorded.v3"]
    assert visit["data"]["note"] == ERASED
    assert int(visit["sequence"]) < int(notices(center, patient)[0]["sequence"])
    assert_none_of(inbox, NOTE)

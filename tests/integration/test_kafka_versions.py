"""Versioned partner messages over a real broker, on PostgreSQL: a deprecated version applies
like the current one until its sunset (by the application's clock), then, like any version
never accepted, goes to the dead letters with ``unsupported-version``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import pytest

from consumers.inbound import InboundConsumer
from consumers.messages import FOLLOWUP_V1_SUNSET, partner_event
from domain.application import CareCoordination
from domain.followups import FollowUps
from jiayi.bootstrap import (
    build_inbound_consumer,
    build_relay,
    ensure_topics,
)
from jiayi.settings import Settings
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
from tests.world import World

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

V1 = "cn.jiayi.partner.followup.recorded.v1"
V2 = "cn.jiayi.partner.followup.recorded.v2"


@pytest.fixture
def clock() -> Clock:
    """The last evening v1 is accepted: 22:00 on 2027-05-31 in Shanghai (14:00 UTC)."""
    return Clock(datetime(2027, 5, 31, 14, 0, tzinfo=UTC))


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


def v1_visit(world: World, patient: UUID) -> dict[str, Any]:
    return {
        "patient_id": str(patient),
        "on": world.today.isoformat(),
        "kind": "face_to_face",
        "measurements": {
            "systolic_bp": 152,
            "diastolic_bp": 96,
            "fasting_glucose": 7.0,
            "weight_kg": 61.5,
        },
        "risk_level": "2",
        "note": "血压偏高",
        "staff_id": "gp-1",
    }


def v2_visit(world: World, patient: UUID) -> dict[str, Any]:
    return {
        "patient_id": str(patient),
        "on": world.today.isoformat(),
        "kind": "face_to_face",
        "measurements": {
            "systolic_bp": {"value": 152, "unit": "mmHg"},
            "diastolic_bp": {"value": 96, "unit": "mmHg"},
            "fasting_glucose": {"value": 126.11, "unit": "mg/dL"},  # 7.0 mmol/L
            "weight": {"value": 61.5, "unit": "kg"},
        },
        "risk_level": 2,
        "note": "血压偏高",
        "staff_id": "gp-1",
    }


def visit_of(app: CareCoordination, patient: UUID) -> dict[str, Any]:
    [visit] = app.load(FollowUps, FollowUps.id_for(patient)).visits.values()
    return {k: v for k, v in visit.items() if k not in ("visit_id", "id", "at")}


def test_a_v1_and_a_v2_follow_up_apply_with_the_same_effect_and_v1_is_counted(
    settings: Settings,
    app: CareCoordination,
    world: World,
    inbound: InboundConsumer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = world.contracted_patient(), world.contracted_patient()
    at = world.now()
    caplog.set_level(logging.WARNING, logger="consumers.inbound")
    send(
        settings,
        (old, partner_event(V1, world.center, "his-v1", v1_visit(world, old), at)),
        (new, partner_event(V2, world.center, "his-v2", v2_visit(world, new), at)),
    )
    drain(inbound, lambda: inbound.applied + inbound.dead >= 2)

    assert (inbound.applied, inbound.dead) == (2, 0)
    assert visit_of(app, old) == visit_of(app, new)
    recorded = [
        e
        for p in (old, new)
        for e in app.events.get(FollowUps.id_for(p))
        if type(e).__qualname__ == "FollowUps.VisitRecorded"
    ]
    assert [(e.measurements, e.risk_level, e.actor.staff_id) for e in recorded] == [  # type: ignore[attr-defined]
        (
            {"systolic_bp": 152.0, "diastolic_bp": 96.0, "fasting_glucose": 7.0, "weight_kg": 61.5},
            "2",
            "gp-1",
        )
    ] * 2

    # who still sends v1 is counted and logged: the type and the organisation, nothing personal
    source = f"urn:jiayi:org:{world.center}"
    assert inbound.deprecated == {(V1, source): 1}
    [line] = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert V1 in line and source in line and "accepted until 2027-05-31" in line
    assert str(old) not in line and "gp-1" not in line

    # both visits go out as the domain's current version, valid against their dataschema
    relay = build_relay(settings, app=app)
    while relay.publish_once():
        pass
    relay.close()
    records = read_all(
        settings.kafka_bootstrap or "", settings.platform_topic or "", app.max_position()
    )
    visits = [
        m
        for m in map(as_json, records)
        if m["type"] == "cn.jiayi.follow-ups.visit-recorded.v3"
        and m["partitionkey"] in (str(old), str(new))
    ]
    assert len(visits) == 2
    for m in visits:
        validate_outbound(m)


def test_v1_after_its_sunset_and_unknown_versions_go_to_the_dead_letters(
    settings: Settings,
    app: CareCoordination,
    world: World,
    inbound: InboundConsumer,
    clock: Clock,
) -> None:
    patient = world.contracted_patient()
    referral = world.referral(patient)
    # The application's clock (the consumer's) reaches the sunset in the application's zone:
    # 00:30 on 2027-06-01 in Shanghai, still 2027-05-31 in UTC.
    clock.advance(hours=2, minutes=30)
    assert (app.now().date(), clock.now.date()) == (FOLLOWUP_V1_SUNSET, date(2027, 5, 31))
    v3 = {**v2_visit(world, patient), "vital_signs": []}
    bad = [
        (partner_event(V1, world.center, "late-v1", v1_visit(world, patient)), V1),
        (partner_event(V3 := V2.replace(".v2", ".v3"), world.center, "v3", v3), V3),
        (
            partner_event(
                "cn.jiayi.partner.referral.accepted.v2",
                world.hospital,
                "acc-v2",
                {"referral_id": str(referral)},
            ),
            "cn.jiayi.partner.referral.accepted.v2",
        ),
    ]
    current = partner_event(V2, world.center, "now-v2", v2_visit(world, patient))
    send(settings, *[(patient, value) for value, _ in bad], (patient, current))
    drain(inbound, lambda: inbound.applied + inbound.dead >= 4)

    assert (inbound.applied, inbound.dead) == (1, 3)
    assert inbound.deprecated == {}
    found = read_all(settings.kafka_bootstrap or "", settings.dead_letter_topic, len(bad))
    # the hospital's message comes from its own topic: the order holds per topic only
    by_value = {d.value: d for d in found}
    assert len(found) == len(by_value) == len(bad)
    dead = [by_value[value] for value, _ in bad]
    assert {headers(d)["jiayi.error.code"] for d in dead} == {"unsupported-version"}
    messages = [headers(d)["__connect.errors.exception.message"] for d in dead]
    assert messages[0] == f"{V1} was accepted until 2027-05-31; the current version is {V2}"
    assert messages[1] == f"{V3!r} is not a supported version; the current version is {V2}"
    assert messages[2].endswith("the current version is cn.jiayi.partner.referral.accepted.v1")

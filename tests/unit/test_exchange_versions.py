"""The exchange's versioned contract without a broker: outbound types follow the event classes'
versions and point at published schemas; inbound versions, upcasters and sunsets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from consumers import schemagen
from consumers.messages import (
    ACCEPTED_TYPES,
    FOLLOWUP_V1_SUNSET,
    SCHEMA_BASE,
    MessageRejected,
    decode,
    followup_v1_to_v2,
    outbound_schema,
    outbound_type,
    partner_event,
)
from domain.referrals import Referral
from tests.schemas import SCHEMAS, schema_file


@pytest.fixture
def version_2_of_accepted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Referral.Accepted as if it had been upcast to version 2 (the domain's own business)."""
    outbound_type.cache_clear()
    monkeypatch.setattr(Referral.Accepted, "class_version", 2, raising=False)
    yield
    outbound_type.cache_clear()


def test_the_outbound_type_carries_the_event_classes_version() -> None:
    assert outbound_type("domain.referrals:Referral.Accepted") == "cn.jiayi.referral.accepted.v1"
    # version 2 since its day became visited_on, 3 since it names every obligation it met
    # (see ARCHITECTURE.md, how to change an event)
    assert outbound_type("domain.followups:FollowUps.VisitRecorded") == (
        "cn.jiayi.follow-ups.visit-recorded.v3"
    )


@pytest.mark.usefixtures("version_2_of_accepted")
def test_an_event_upcast_to_version_2_goes_out_as_version_2() -> None:
    type = outbound_type("domain.referrals:Referral.Accepted")
    assert type == "cn.jiayi.referral.accepted.v2"
    assert outbound_schema(type) == f"{SCHEMA_BASE}outbound/cn.jiayi.referral.accepted.v2.json"
    # its schema is not published yet: the check says so (run python -m consumers.schemagen)
    assert "cn.jiayi.referral.accepted.v2.json" in schemagen.stale()


def test_every_current_outbound_type_has_its_published_schema() -> None:
    assert schemagen.stale() == [], "run: python -m consumers.schemagen"
    for cls in schemagen.event_classes():
        type = schemagen.event_type_name(cls)
        assert schema_file(outbound_schema(type)).name == f"{type}.json"


def test_the_outbound_schemas_are_valid_schemas() -> None:
    for path in (SCHEMAS / "outbound").glob("*.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


# --- inbound -------------------------------------------------------------------------------

V1 = "cn.jiayi.partner.followup.recorded.v1"
V2 = "cn.jiayi.partner.followup.recorded.v2"
BEFORE = FOLLOWUP_V1_SUNSET - timedelta(days=1)
ORG = UUID("00000000-0000-4000-8000-000000000001")
PATIENT = UUID("00000000-0000-4000-8000-000000000002")


def visit(**data: Any) -> dict[str, Any]:
    return {"patient_id": str(PATIENT), "on": "2026-05-30", "kind": "face_to_face", **data}


V1_DATA = visit(
    measurements={"systolic_bp": 150, "diastolic_bp": 95, "fasting_glucose": 7.0, "weight_kg": 61},
    risk_level="2",
    staff_id="gp-1",
)
V2_DATA = visit(
    measurements={
        "systolic_bp": {"value": 150, "unit": "mmHg"},
        "diastolic_bp": {"value": 95, "unit": "mmHg"},
        "fasting_glucose": {"value": 126.11, "unit": "mg/dL"},
        "weight": {"value": 61, "unit": "kg"},
    },
    risk_level=2,
    staff_id="gp-1",
)


def rejected(value: bytes, today: date) -> MessageRejected:
    with pytest.raises(MessageRejected) as caught:
        decode(value, today)
    return caught.value


def test_every_accepted_inbound_type_has_its_schema_and_its_asyncapi_message() -> None:
    asyncapi = yaml.safe_load((SCHEMAS.parent / "asyncapi.yaml").read_text())
    payloads = {
        m["name"]: m["payload"]["$ref"]
        for m in asyncapi["components"]["messages"].values()
        if m["name"].startswith("cn.jiayi.partner.")
    }
    assert sorted(payloads) == list(ACCEPTED_TYPES)
    for type in ACCEPTED_TYPES:
        path = SCHEMAS / "inbound" / f"{type}.json"
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["properties"]["type"] == {"const": type}
        assert payloads[type] == f"schemas/inbound/{type}.json"
    assert json.loads((SCHEMAS / "inbound" / f"{V1}.json").read_text())["deprecated"] is True


def test_a_v1_and_a_v2_follow_up_make_the_same_command() -> None:
    old = decode(partner_event(V1, ORG, "v-1", V1_DATA), BEFORE)
    new = decode(partner_event(V2, ORG, "v-1", V2_DATA), BEFORE)
    assert old.command == new.command
    assert old.command.measurements == {  # type: ignore[attr-defined]
        "systolic_bp": 150.0,
        "diastolic_bp": 95.0,
        "fasting_glucose": 7.0,
        "weight_kg": 61.0,
    }
    assert old.command.risk_level == "2"  # type: ignore[attr-defined]
    assert (old.sunset, new.sunset) == (FOLLOWUP_V1_SUNSET, None)
    assert (old.type, old.actor) == (new.type.replace(".v2", ".v1"), new.actor)


def test_the_v1_upcaster_makes_valid_v2_data() -> None:
    schema = json.loads((SCHEMAS / "inbound" / f"{V2}.json").read_text())
    upcast = followup_v1_to_v2(V1_DATA)
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(
        json.loads(partner_event(V2, ORG, "v-1", upcast))
    )
    assert followup_v1_to_v2(visit()) == visit()
    error = rejected(partner_event(V1, ORG, "v-2", visit(measurements={"bmi": 22})), BEFORE)
    assert (error.code, error.message) == ("invalid-value", "unknown measurement 'bmi'")


def test_v2_states_units_and_knows_its_measurements() -> None:
    bad = [
        visit(measurements={"weight_kg": {"value": 61, "unit": "kg"}}),
        visit(measurements={"fasting_glucose": {"value": 7, "unit": "g/L"}}),
        visit(measurements={"systolic_bp": 150}),
        visit(risk_level="2"),
    ]
    for data in bad:
        assert rejected(partner_event(V2, ORG, "v-3", data), BEFORE).code == "schema-violation"


def test_v1_is_refused_from_its_sunset_and_unknown_versions_always() -> None:
    on_sunset = rejected(partner_event(V1, ORG, "v-4", V1_DATA), FOLLOWUP_V1_SUNSET)
    assert on_sunset.code == "unsupported-version"
    assert on_sunset.message == (
        f"{V1} was accepted until {BEFORE.isoformat()}; the current version is {V2}"
    )
    for type in (
        "cn.jiayi.partner.followup.recorded.v3",
        "cn.jiayi.partner.followup.recorded.v0",
        "cn.jiayi.partner.followup.recorded",
        "cn.jiayi.partner.referral.accepted.v2",
    ):
        error = rejected(partner_event(type, ORG, "v-5", V2_DATA), BEFORE)
        assert error.code == "unsupported-version", type
        assert "the current version is cn.jiayi.partner." in error.message
    unknown = rejected(
        partner_event("cn.jiayi.partner.referral.teleported.v1", ORG, "x", {}), BEFORE
    )
    assert unknown.code == "unknown-type"

"""The exchange's versioned contract without a broker: outbound types follow the event classes'
versions and point at published schemas; inbound versions, upcasters and sunsets."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from jsonschema import Draft202012Validator

from consumers import schemagen
from consumers.messages import SCHEMA_BASE, outbound_schema, outbound_type
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
    assert outbound_type("domain.followups:FollowUps.VisitRecorded") == (
        "cn.jiayi.follow-ups.visit-recorded.v1"
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

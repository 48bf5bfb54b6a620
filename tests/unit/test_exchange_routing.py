"""The relay's routing table: who gets an event at that moment, which fields, and the AsyncAPI
document stating the same."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import yaml

from consumers.deadletter import dead_letter_codes
from consumers.routing import (
    ALL,
    EVER,
    ROUTES,
    Cut,
    Router,
    apply_cut,
    route_of,
    routing_document,
)
from consumers.topics import inbound_pattern, inbound_topic, org_of_inbound
from domain.common import Actor

ASYNCAPI = Path(__file__).resolve().parents[2] / "consumers" / "asyncapi.yaml"
C1, C2, H1, H2, P = (uuid4() for _ in range(5))


def ev(id: UUID, **fields: Any) -> Any:
    return SimpleNamespace(originator_id=id, **fields)


def names(router: Router, name: str, event: Any, patient: UUID = P) -> list[UUID]:
    return [org for org, _ in router.route(name, event, router.position + 1, patient)]


def test_asyncapi_states_the_routing_table_and_every_dead_letter_code() -> None:
    doc = yaml.safe_load(ASYNCAPI.read_text())
    assert doc["channels"]["partnerOutbound"]["x-routing"] == routing_document()
    header = doc["components"]["messages"]["deadLetter"]["headers"]["properties"]
    assert header["jiayi.error.code"]["x-codes"] == dead_letter_codes()
    assert "source-mismatch" in dead_letter_codes()
    assert doc["channels"]["partnerInbound"]["address"] == "jiayi.partner.{organisationId}.in"


def test_an_unknown_event_goes_to_nobody() -> None:
    assert route_of("Organisation.Registered") == {}
    assert route_of("Team.Formed") == {}
    assert route_of("Patient.Tagged") == ROUTES["Patient.*"]


def test_the_relations_at_that_moment_decide_and_an_ending_event_still_reaches() -> None:
    router = Router()
    assert names(router, "Patient.Registered", ev(P, center_id=C1)) == [C1]
    referral = uuid4()
    requested = ev(referral, hospital_id=H1, patient_id=P)
    assert sorted(names(router, "Referral.Requested", requested)) == sorted([C1, H1])
    # a transfer request: the asking center gets nothing
    asked = ev(P, center_id=C2, team_id=uuid4(), consent="c")
    assert names(router, "Patient.TransferRequested", asked) == [C1]
    assert sorted(names(router, "Patient.Transferred", ev(P, center_id=C2))) == sorted([C1, C2])
    assert names(router, "Patient.Tagged", ev(P)) == [C2]
    assert sorted(names(router, "Referral.Cancelled", ev(referral))) == sorted([C2, H1])
    assert names(router, "Referral.FollowedUp", ev(referral)) == [C2]  # the relation ended
    # quotas: the publishing hospital; bookings also the patient's center
    quota = uuid4()
    assert names(router, "Quota.Published", ev(quota, hospital_id=H2)) == [H2]
    assert sorted(names(router, "Quota.Booked", ev(quota))) == sorted([C2, H2])


def test_a_failed_page_is_undone() -> None:
    router = Router()
    names(router, "Patient.Registered", ev(P, center_id=C1))
    router.commit()
    router.begin()
    referral = uuid4()
    names(router, "Referral.Requested", ev(referral, hospital_id=H1, patient_id=P))
    names(router, "Patient.Transferred", ev(P, center_id=C2))
    router.rollback()
    assert router.position == 1
    assert names(router, "Patient.Tagged", ev(P)) == [C1]
    assert names(router, "Referral.Accepted", ev(referral)) == [C1]  # no relation to H1 yet


def test_the_erasure_notice_reaches_every_organisation_ever_sent_an_event_about_the_patient() -> (
    None
):
    router = Router()
    names(router, "Patient.Registered", ev(P, center_id=C1))
    closed = uuid4()  # a referral to H1, closed long before the erasure
    names(router, "Referral.Requested", ev(closed, hospital_id=H1, patient_id=P))
    names(router, "Referral.Rejected", ev(closed))
    asked = ev(P, center_id=C2, team_id=uuid4(), consent="c")
    names(router, "Patient.TransferRequested", asked)  # asking gives C2 nothing yet
    names(router, "Patient.Transferred", ev(P, center_id=C2))  # C1 is a previous home now
    names(router, "Patient.Tagged", ev(P))
    # H2 and a third center only ever heard of another patient
    other, c3 = uuid4(), uuid4()
    names(router, "Patient.Registered", ev(other, center_id=c3), patient=other)
    names(router, "Referral.Requested", ev(uuid4(), hospital_id=H2, patient_id=other), other)

    assert route_of("Patient.Erased") == {EVER: ALL}
    erased = names(router, "Patient.Erased", ev(P))
    assert sorted(erased) == sorted([C1, C2, H1])
    assert sorted(names(router, "Patient.Erased", ev(other), other)) == sorted([c3, H2])


def test_the_erasure_notice_reaches_the_hospital_of_a_booking() -> None:
    router = Router()
    names(router, "Patient.Registered", ev(P, center_id=C1))
    quota = uuid4()
    names(router, "Quota.Published", ev(quota, hospital_id=H2), patient=quota)
    names(router, "Quota.Booked", ev(quota))
    assert sorted(names(router, "Patient.Erased", ev(P))) == sorted([C1, H2])


def test_a_patient_nobody_was_sent_anything_about_is_erased_without_a_notice() -> None:
    router = Router()
    names(router, "Patient.Registered", ev(P, center_id=C1))
    stranger = uuid4()
    assert names(router, "Patient.Erased", ev(stranger), stranger) == []


def test_a_failed_page_forgets_the_recipients_it_added() -> None:
    router = Router()
    names(router, "Patient.Registered", ev(P, center_id=C1))
    router.commit()
    router.begin()
    names(router, "Referral.Requested", ev(uuid4(), hospital_id=H1, patient_id=P))
    names(router, "Patient.Transferred", ev(P, center_id=C2))
    fresh = uuid4()
    names(router, "Patient.Registered", ev(fresh, center_id=C2), patient=fresh)
    router.rollback()
    assert router.received == {P: frozenset({C1})}
    assert names(router, "Patient.Erased", ev(P)) == [C1]
    # a page that succeeds keeps them
    router.begin()
    names(router, "Referral.Requested", ev(uuid4(), hospital_id=H1, patient_id=P))
    router.commit()
    assert sorted(names(router, "Patient.Erased", ev(P))) == sorted([C1, H1])


def test_free_text_of_others_and_withheld_fields_are_sent_empty() -> None:
    cut = Cut(withheld=frozenset({"contract_id"}), others_text=frozenset({"note"}))
    fields = {"contract_id": uuid4(), "note": "n", "actor": Actor("x", C1)}
    assert apply_cut(fields, cut, H1) == {**fields, "contract_id": None, "note": ""}
    assert apply_cut(fields, cut, C1)["note"] == "n"


def test_the_acting_organisation_comes_from_the_inbound_topic() -> None:
    topic = inbound_topic("jiayi.partner.", H1)
    assert org_of_inbound("jiayi.partner.", topic) == H1
    assert org_of_inbound("jiayi.partner.", f"jiayi.partner.{H1}.out") is None
    import re

    assert re.match(inbound_pattern("jiayi.partner."), topic)


def test_a_hospital_is_not_told_which_referral_a_referral_sends_again() -> None:
    """``resent_from`` names the earlier referral, rejected or cancelled, often by another
    hospital: the hospital receiving the new one gets the form, not that history."""
    earlier = uuid4()
    fields = {
        "resent_from": earlier,
        "contract_id": uuid4(),
        "team_id": uuid4(),
        "reason": "血糖控制不佳",
        "actor": Actor("gp-1", C1),
    }
    for name in ("Referral.Requested", "Referral.ReturnStarted"):
        (cut,) = [c for c in route_of(name).values() if c is not ALL]
        sent = apply_cut(fields, cut, H2)
        assert (sent["resent_from"], sent["contract_id"], sent["team_id"]) == (None, None, None)
        assert sent["reason"] == "血糖控制不佳"  # the form itself goes

"""The unit of work's contract (domain/unit_of_work.py), on both stores.

A use case is all or nothing in both modes: one that fails after an aggregate already decided
a step leaves every aggregate as it was, so a batch (the Kafka consumer's) records the other
use cases as if the failed one had never run.
"""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.application import AlreadyExists, CareCoordination
from domain.patients import ContractAlreadyActive, Patient, Tag
from domain.unit_of_work import BATCHED, use_case
from jiayi.bootstrap import ensure_schema, event_store_env, with_keyring
from jiayi.settings import Settings
from tests.conftest import Clock
from tests.world import build_world


def state(app: CareCoordination, id: UUID) -> dict[str, Any]:
    """What a reader of the aggregate sees: a copy of its attributes, version included."""
    return copy.deepcopy(vars(app.load(Patient, id)))


def test_a_household_that_fails_midway_leaves_the_batch_as_it_was(app: CareCoordination) -> None:
    world = build_world(app)
    husband = world.patient("王建国", serial=1)
    wife = world.contracted_patient(serial=2)
    child = world.patient("王小明", serial=3)
    before = app.max_position()

    with app.batch() as batch:
        app.tag_patient(child, tag="hypertension", actor=world.gp)
        child_tagged = state(app, child)
        # The husband's contract is decided before the wife's refusal is found.
        with pytest.raises(ContractAlreadyActive):
            app.sign_household(
                [husband, wife],
                team_id=world.team,
                package="basic",
                start=world.today,
                actor=world.gp,
            )
        assert not batch.dirty
        assert state(app, child) == child_tagged
        assert app.load(Patient, husband).contract_id is None
        signed = app.sign_contract(
            husband, team_id=world.team, package="basic", start=world.today, actor=world.gp
        )
        assert signed.position == BATCHED
        app.record_batch(batch)

    assert app.load(Patient, husband).contract_id == signed.id
    assert "hypertension" in app.load(Patient, child).tags
    recorded = app.recorder.select_notifications(start=before + 1, limit=100)
    # the tag, then the contract, the husband's slot and his follow-ups: nothing of the failure
    assert [n.topic.rsplit(":", 1)[1] for n in recorded] == [
        "Patient.Tagged",
        "Contract.Signed",
        "Patient.ContractTaken",
        "FollowUps.Opened",
    ]


class Careless(CareCoordination):
    """A use case written against the rule "decide before you change": it changes the
    patient, then refuses. The unit of work must still leave nothing behind."""

    @use_case
    def tag_then_fail(self, patient_id: UUID, *, actor: Any) -> None:
        patient = self.load(Patient, patient_id)
        patient.tag(Tag.TYPE2_DIABETES, actor, self.now())
        raise AlreadyExists("refused after changing the patient")


def test_a_use_case_that_changes_then_fails_leaves_nothing_behind(
    settings: Settings, clock: Clock
) -> None:
    ensure_schema(settings)
    app = with_keyring(
        Careless(env=event_store_env(settings), clock=clock, timezone=settings.zone()), settings
    )
    try:
        world = build_world(app)
        patient = world.patient()
        with app.batch() as batch:
            app.tag_patient(patient, tag="hypertension", actor=world.gp)
            after_first = state(app, patient)
            with pytest.raises(AlreadyExists):
                app.tag_then_fail(patient, actor=world.gp)
            assert state(app, patient) == after_first
            app.record_batch(batch)
        assert app.load(Patient, patient).tags == {"hypertension"}

        # outside a batch: nothing recorded either
        with pytest.raises(AlreadyExists):
            app.tag_then_fail(patient, actor=world.gp)
        assert app.load(Patient, patient).tags == {"hypertension"}
    finally:
        app.close()


def test_a_chosen_id_already_taken_is_refused_in_a_batch_too(app: CareCoordination) -> None:
    world = build_world(app)
    taken = world.referral()
    patient = world.contracted_patient(serial=7)
    named = app.load(Patient, patient)
    fresh = uuid4()

    with app.batch() as batch:
        with pytest.raises(AlreadyExists):  # recorded before the batch
            world.app.request_referral(
                patient,
                hospital_id=world.hospital,
                department="cardiology",
                reason="chest pain",
                diagnosis="I20",
                urgency="routine",
                actor=world.gp,
                id=taken,
            )
        world.app.request_referral(
            patient,
            hospital_id=world.hospital,
            department="cardiology",
            reason="chest pain",
            diagnosis="I20",
            urgency="routine",
            actor=world.gp,
            id=fresh,
        )
        with pytest.raises(AlreadyExists):  # taken earlier in the same batch
            app.start_return(
                patient,
                national_id=named.national_id,
                name=named.name,
                hospital_id=world.hospital,
                department="cardiology",
                summary="stable",
                prescriptions=[],
                rehabilitation="",
                follow_up_due=world.today,
                actor=world.hospital_staff,
                id=fresh,
            )
        app.record_batch(batch)
    assert app.load_at(fresh).version == 1

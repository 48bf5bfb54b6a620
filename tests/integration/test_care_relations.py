"""Care relationships decide who reads what: an access matrix generated from relations.

A story starts and ends every kind of relation; after each step, every reader (the patient's
center, an unrelated center of the same district, one of another district, the hospitals, a
coordinator of each district, an auditor) asks every query about the patient. What each may
see is computed here from the relations the story has created so far, following the table in
ARCHITECTURE.md ("Care relationships"), never from the reader's role; the views must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest

from domain.application import CareCoordination
from domain.common import Actor
from jiayi.bootstrap import Projections, build_projections
from jiayi.settings import Settings
from projections.queries import Page, Scope
from tests.conftest import Clock
from tests.world import DISTRICT, World, build_world, national_id

OTHER_DISTRICT = "江宁区"
EVERYTHING = Scope(everything=True)


@dataclass(frozen=True)
class Relation:
    org: UUID
    kind: str
    source: UUID
    active: bool = True


@dataclass
class Model:
    """The relations the story has created, and what each reader may therefore see."""

    patient: UUID
    home_district: dict[UUID, str]
    referral_center: dict[UUID, UUID] = field(default_factory=dict)
    relations: list[Relation] = field(default_factory=list)

    def start(self, org: UUID, kind: str, source: UUID) -> None:
        self.relations.append(Relation(org, kind, source))

    def end(self, source: UUID, kind: str | None = None) -> None:
        """End the active relations that come from ``source`` (of ``kind`` only, if named)."""
        self.relations = [
            Relation(
                r.org,
                r.kind,
                r.source,
                r.active and not (r.source == source and kind in (None, r.kind)),
            )
            for r in self.relations
        ]

    def _of(self, org: UUID) -> list[Relation]:
        return [r for r in self.relations if r.org == org]

    def _home(self) -> UUID:
        [home] = [r.org for r in self.relations if r.kind == "home" and r.active]
        return home

    def registry(self, reader: Scope) -> bool:
        if reader.everything:
            return True
        if reader.org_id is None:
            return self.home_district[self._home()] == reader.district
        return any(r.active and r.kind in ("home", "referral") for r in self._of(reader.org_id))

    def related(self, reader: Scope) -> bool:
        if reader.org_id is None:
            return self.registry(reader)
        return bool(self._of(reader.org_id))

    def referral(self, reader: Scope, referral: UUID) -> bool:
        if reader.everything:
            return True
        center = self.referral_center[referral]
        if reader.org_id is None:
            return self.home_district[center] == reader.district
        mine = self._of(reader.org_id)
        return (
            reader.org_id == center
            or any(r.source == referral for r in mine)
            or any(r.kind == "home" and r.active for r in mine)
        )

    def entry(self, reader: Scope, entry: dict[str, Any]) -> bool:
        """Whether ``reader`` sees one of the patient's timeline entries."""
        if entry["kind"].startswith("access."):
            return reader.everything
        if reader.org_id is None or any(
            r.kind == "home" and r.active for r in self._of(reader.org_id)
        ):
            return self.registry(reader)
        mine = self._of(reader.org_id)
        return (
            any(
                r.kind in ("referral", "return") and str(r.source) == entry["referral_id"]
                for r in mine
            )
            or (entry["booking_id"] is not None and entry["hospital_id"] == str(reader.org_id))
            or (entry["kind"].startswith("transfer.") and entry["org_id"] == str(reader.org_id))
        )

    def obligation(self, reader: Scope, obligation: dict[str, Any]) -> bool:
        """Whether ``reader`` sees one of the patient's open follow-up obligations: as the
        timeline entries about it (a hospital only its own referral's or return's loop)."""
        if reader.org_id is None or any(
            r.kind == "home" and r.active for r in self._of(reader.org_id)
        ):
            return self.registry(reader)
        return any(
            r.kind in ("referral", "return") and str(r.source) == obligation["source_id"]
            for r in self._of(reader.org_id)
        )


@dataclass
class Story:
    app: CareCoordination
    world: World
    views: Projections
    clock: Clock
    readers: dict[str, Scope]
    model: Model
    second_hospital: UUID
    referrals: list[UUID] = field(default_factory=list)

    def check(self, step: str) -> None:
        q = self.views.queries
        assert q.wait_for(self.app.max_position())
        patient = self.model.patient
        every = q.timeline(EVERYTHING, patient, page=Page(limit=500))
        assert every is not None
        for name, reader in self.readers.items():
            where = f"after {step}, {name}"
            registry = self.model.registry(reader)
            assert (q.patient(reader, patient) is not None) == registry, where
            found = [p["id"] for p in q.search_patients(reader, "王秀英", Page())]
            assert found == ([str(patient)] if registry else []), where
            timeline = q.timeline(reader, patient, page=Page(limit=500))
            if not self.model.related(reader):
                assert timeline is None, where
            else:
                expected = [e for e in every if self.model.entry(reader, e)]
                assert timeline == expected, where
            today = self.world.today
            owed = q.open_obligations(reader, patient, today)
            if not self.model.related(reader):
                assert owed is None, where
            else:
                all_owed = q.open_obligations(EVERYTHING, patient, today) or []
                assert owed == [o for o in all_owed if self.model.obligation(reader, o)], where
            for referral in self.referrals:
                seen = q.referral(reader, referral) is not None
                assert seen == self.model.referral(reader, referral), f"{where}, {referral}"


@pytest.fixture
def story(settings: Settings, app: CareCoordination, clock: Clock) -> Iterator[Story]:
    world = build_world(app)
    root = Actor("setup", UUID(int=0))
    neighbour = app.register_organisation(
        "community_center", name="宁海路社区卫生服务中心", district=DISTRICT, actor=root
    ).id
    second = app.register_organisation(
        "hospital", name="省人民医院", district=DISTRICT, actor=root, level=3
    ).id
    app.add_department(second, code="cardiology", name="心内科", actor=Actor("admin", second))
    patient = world.patient()
    readers = {
        "home center": Scope(org_id=world.center, org_kind="community_center"),
        "neighbour center": Scope(org_id=neighbour, org_kind="community_center"),
        "center elsewhere": Scope(org_id=world.other_center, org_kind="community_center"),
        "hospital": Scope(org_id=world.hospital, org_kind="hospital"),
        "second hospital": Scope(org_id=second, org_kind="hospital"),
        "hospital elsewhere": Scope(org_id=world.other_hospital, org_kind="hospital"),
        "coordinator": Scope(district=DISTRICT),
        "coordinator elsewhere": Scope(district=OTHER_DISTRICT),
        "auditor": EVERYTHING,
    }
    model = Model(
        patient,
        home_district={
            world.center: DISTRICT,
            neighbour: DISTRICT,
            world.other_center: OTHER_DISTRICT,
        },
    )
    model.start(world.center, "home", patient)
    views = build_projections(settings, app, poll=0.02)
    yield Story(app, world, views, clock, readers, model, second)
    views.close()


def _refer(story: Story, hospital: UUID) -> UUID:
    w = story.world
    referral = story.app.request_referral(
        story.model.patient,
        hospital_id=hospital,
        department="cardiology",
        reason="uncontrolled hypertension",
        diagnosis="I10",
        urgency="routine",
        actor=w.gp,
    ).id
    story.referrals.append(referral)
    story.model.referral_center[referral] = w.center
    story.model.start(hospital, "referral", referral)
    return referral


def test_every_reader_sees_what_its_relations_allow_at_every_step(story: Story) -> None:
    app, w, model, patient = story.app, story.world, story.model, story.model.patient
    step: Callable[[str], None] = story.check
    step("registration")

    app.sign_contract(patient, team_id=w.team, package="basic", start=w.today, actor=w.gp)
    step("the contract")

    first = _refer(story, w.hospital)
    step("a referral to the hospital")

    story.clock.advance(hours=2)
    app.reject_referral(first, reason_code="no_capacity", actor=w.hospital_staff)
    model.end(first)
    step("the hospital's rejection")

    second = _refer(story, story.second_hospital)
    staff = Actor("desk", story.second_hospital)
    story.clock.advance(hours=1)
    app.accept_referral(second, actor=staff)
    app.record_arrival(second, actor=staff)
    step("the second hospital's acceptance")

    story.clock.advance(days=3)
    app.return_to_community(
        second,
        summary="血压控制良好",
        prescriptions=[],
        rehabilitation="低盐饮食",
        follow_up_due=w.today + timedelta(days=14),
        actor=staff,
    )
    step("the return to the community")

    app.acknowledge_return(second, actor=w.gp)
    model.end(second)
    step("the loop closed")

    # a hospital elsewhere returns the patient it treated without a referral, naming them
    elsewhere = Actor("ward-3", w.other_hospital)
    returned = app.start_return(
        patient,
        **w.identity(patient),
        hospital_id=w.other_hospital,
        department="cardiology",
        summary="急诊处理后稳定",
        prescriptions=[],
        rehabilitation="",
        follow_up_due=w.today + timedelta(days=7),
        actor=elsewhere,
    ).id
    story.referrals.append(returned)
    model.referral_center[returned] = w.center
    model.start(w.other_hospital, "return", returned)
    step("a return started by a hospital elsewhere")

    app.acknowledge_return(returned, actor=w.gp)
    model.end(returned)
    step("that return acknowledged")

    # a center of another district asks for the patient; the center declines, then releases
    asked = {**w.identity(patient), "team_id": w.other_team(), "actor": w.other_admin}
    app.request_transfer(patient, consent="转签同意书 1", **asked)
    model.start(w.other_center, "transfer", patient)
    step("a transfer request")

    app.decline_transfer(patient, reason="治疗中", actor=w.center_admin)
    model.end(patient, "transfer")
    step("the transfer declined")

    app.request_transfer(patient, consent="转签同意书 2", **asked)
    model.start(w.other_center, "transfer", patient)
    app.release_transfer(patient, actor=w.center_admin)
    model.end(patient)
    model.start(w.other_center, "home", patient)
    step("the transfer released")


def test_a_district_quota_shows_each_center_only_its_own_bookings(story: Story) -> None:
    app, w = story.app, story.world
    neighbour = story.readers["neighbour center"].org_id
    assert neighbour is not None
    quota = app.publish_quota(
        w.hospital,
        kind="expert",
        department="cardiology",
        session_date=w.today + timedelta(days=7),
        slots=5,
        release_at=w.now() + timedelta(days=6),
        actor=w.hospital_staff,
        expert="Dr. Zhou",
        half_day="am",
        reserved_for_district=DISTRICT,
    ).id
    mine = app.book_slot(quota, patient_id=story.model.patient, actor=w.gp).id
    theirs_patient = patient_at(app, neighbour)
    theirs = app.book_slot(quota, patient_id=theirs_patient, actor=Actor("gp-9", neighbour)).id
    q = story.views.queries
    assert q.wait_for(app.max_position())

    def bookings(reader: str) -> set[str] | None:
        found = q.quota(story.readers[reader], quota)
        return None if found is None else {b["id"] for b in found["bookings"]}

    assert bookings("home center") == {str(mine)}
    assert bookings("neighbour center") == {str(theirs)}
    assert bookings("hospital") == bookings("coordinator") == bookings("auditor")
    assert bookings("auditor") == {str(mine), str(theirs)}
    assert bookings("center elsewhere") is None
    # the counts stay the quota's for everyone who sees it
    home = q.quota(story.readers["home center"], quota)
    assert home is not None and (home["booked"], home["slots_left"]) == (2, 3)


def patient_at(app: CareCoordination, center: UUID) -> UUID:
    """Another resident, registered at ``center``."""
    born = date(1961, 8, 9)
    return app.register_patient(
        "陈建华",
        sex="M",
        birth_date=born,
        national_id=national_id(born, 77),
        phone="13900000000",
        center_id=center,
        actor=Actor("registry", center),
    ).id


def test_search_takes_every_character_literally_and_needs_a_real_term(story: Story) -> None:
    q, center = story.views.queries, story.readers["home center"]
    assert q.wait_for(story.app.max_position())
    assert [p["name"] for p in q.search_patients(center, "秀英", Page())] == ["王秀英"]
    for wildcard in ("%", "%%", "__", "王%", "_秀英", "王"):
        assert q.search_patients(center, wildcard, Page()) == [], wildcard
    assert [p["id"] for p in q.search_patients(center, str(story.model.patient), Page())] == [
        str(story.model.patient)
    ]

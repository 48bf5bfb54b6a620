"""A small, named world for scenario tests: one district, a center, a hospital, a team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

from domain.application import CareCoordination
from domain.common import Actor
from domain.patients import Patient

DISTRICT = "鼓楼区"


def national_id(birth: date, serial: int = 123) -> str:
    body = f"320106{birth:%Y%m%d}{serial % 1000:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


@dataclass
class World:
    app: CareCoordination
    center: UUID
    other_center: UUID
    hospital: UUID
    other_hospital: UUID
    team: UUID
    _other_team: UUID | None = None

    @property
    def center_admin(self) -> Actor:
        return Actor("center-admin", self.center)

    @property
    def gp(self) -> Actor:
        return Actor("gp-1", self.center)

    @property
    def hospital_staff(self) -> Actor:
        return Actor("cardio-desk", self.hospital)

    @property
    def other_hospital_staff(self) -> Actor:
        return Actor("intruder", self.other_hospital)

    def patient(
        self,
        name: str = "王秀英",
        birth: date = date(1950, 3, 4),
        tags: tuple[str, ...] = (),
        serial: int = 123,
    ) -> UUID:
        return self.app.register_patient(
            name,
            sex="F",
            birth_date=birth,
            national_id=national_id(birth, serial),
            phone="13800000000",
            center_id=self.center,
            actor=self.center_admin,
            tags=tags,
        ).id

    def contracted_patient(self, tags: tuple[str, ...] = (), serial: int = 123) -> UUID:
        pid = self.patient(tags=tags, serial=serial)
        self.app.sign_contract(
            pid, team_id=self.team, package="basic", start=self.today, actor=self.gp
        )
        return pid

    @property
    def other_admin(self) -> Actor:
        return Actor("other-admin", self.other_center)

    def other_team(self) -> UUID:
        """A team of the other center with a general practitioner (formed on first use)."""
        if self._other_team is None:
            admin = self.other_admin
            self._other_team = self.app.form_team(
                self.other_center, name="江宁团队", actor=admin
            ).id
            self.app.add_team_member(
                self._other_team,
                staff_id="gp-9",
                name="赵医生",
                role="general_practitioner",
                org_id=self.other_center,
                actor=admin,
            )
        return self._other_team

    def identity(self, patient: UUID) -> dict[str, str]:
        """How the patient names themself at another center: national id and name."""
        found = self.app.load(Patient, patient)
        return {"national_id": found.national_id, "name": found.name}

    def transfer_to_other_center(self, patient: UUID, consent: str = "转签同意书 0001") -> int:
        """The other center asks for the patient and their center releases them (at once
        when there is no active contract); the log position reached."""
        done = self.app.request_transfer(
            patient,
            **self.identity(patient),
            team_id=self.other_team(),
            consent=consent,
            actor=self.other_admin,
        )
        if self.app.load(Patient, patient).center_id == self.other_center:
            return done.position
        return self.app.release_transfer(patient, actor=self.center_admin).position

    @property
    def today(self) -> date:
        return self.app.now().date()

    def now(self) -> datetime:
        return self.app.now()

    def referral(self, patient: UUID | None = None, urgency: str = "routine") -> UUID:
        pid = patient or self.contracted_patient()
        return self.app.request_referral(
            pid,
            hospital_id=self.hospital,
            department="cardiology",
            reason="uncontrolled hypertension",
            diagnosis="I10",
            urgency=urgency,
            actor=self.gp,
        ).id

    def quota(self, slots: int = 10, days_ahead: int = 7) -> UUID:
        session = self.today + timedelta(days=days_ahead)
        return self.app.publish_quota(
            self.hospital,
            kind="expert",
            department="cardiology",
            session_date=session,
            slots=slots,
            release_at=self.now() + timedelta(days=days_ahead - 1),
            actor=self.hospital_staff,
            expert="Dr. Zhou",
            half_day="am",
            reserved_for_center=self.center,
        ).id


def build_world(app: CareCoordination) -> World:
    root = Actor("setup", UUID(int=0))
    center = app.register_organisation(
        "community_center", name="鼓楼社区卫生服务中心", district=DISTRICT, actor=root
    ).id
    other_center = app.register_organisation(
        "community_center", name="江宁社区卫生服务中心", district="江宁区", actor=root
    ).id
    hospital = app.register_organisation(
        "hospital", name="鼓楼医院", district=DISTRICT, actor=root, level=3
    ).id
    other = app.register_organisation(
        "hospital", name="江宁医院", district="江宁区", actor=root, level=2
    ).id
    for h in (hospital, other):
        app.add_department(h, code="cardiology", name="心内科", actor=Actor("admin", h))
    admin = Actor("center-admin", center)
    team = app.form_team(center, name="团队一", actor=admin).id
    app.add_team_member(
        team,
        staff_id="gp-1",
        name="李医生",
        role="general_practitioner",
        org_id=center,
        actor=admin,
    )
    app.add_team_member(
        team, staff_id="nurse-1", name="张护士", role="nurse", org_id=center, actor=admin
    )
    return World(app, center, other_center, hospital, other, team)

"""A small, named world for scenario tests: one district, a center, a hospital, a team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

from domain.application import CareCoordination
from domain.common import Actor

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
            "F",
            birth,
            national_id(birth, serial),
            "13800000000",
            self.center,
            self.center_admin,
            tags=tags,
        ).id

    def contracted_patient(self, tags: tuple[str, ...] = (), serial: int = 123) -> UUID:
        pid = self.patient(tags=tags, serial=serial)
        self.app.sign_contract(pid, self.team, "basic", self.today, self.gp)
        return pid

    @property
    def today(self) -> date:
        return self.app.now().date()

    def now(self) -> datetime:
        return self.app.now()

    def referral(self, patient: UUID | None = None, urgency: str = "routine") -> UUID:
        pid = patient or self.contracted_patient()
        return self.app.request_referral(
            pid,
            self.hospital,
            "cardiology",
            "uncontrolled hypertension",
            "I10",
            urgency,
            self.gp,
        ).id

    def quota(self, slots: int = 10, days_ahead: int = 7) -> UUID:
        session = self.today + timedelta(days=days_ahead)
        return self.app.publish_quota(
            self.hospital,
            "expert",
            "cardiology",
            session,
            slots,
            self.now() + timedelta(days=days_ahead - 1),
            self.hospital_staff,
            expert="Dr. Zhou",
            half_day="am",
            reserved_for_center=self.center,
        ).id


def build_world(app: CareCoordination) -> World:
    root = Actor("setup", UUID(int=0))
    center = app.register_organisation(
        "community_center", "鼓楼社区卫生服务中心", DISTRICT, root
    ).id
    other_center = app.register_organisation(
        "community_center", "江宁社区卫生服务中心", "江宁区", root
    ).id
    hospital = app.register_organisation("hospital", "鼓楼医院", DISTRICT, root, level=3).id
    other = app.register_organisation("hospital", "江宁医院", "江宁区", root, level=2).id
    for h in (hospital, other):
        app.add_department(h, "cardiology", "心内科", Actor("admin", h))
    admin = Actor("center-admin", center)
    team = app.form_team(center, "团队一", admin).id
    app.add_team_member(team, "gp-1", "李医生", "general_practitioner", center, admin)
    app.add_team_member(team, "nurse-1", "张护士", "nurse", center, admin)
    return World(app, center, other_center, hospital, other, team)

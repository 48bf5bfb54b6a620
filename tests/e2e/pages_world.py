"""A small story for the web pages, told through the use cases with back-dated steps, served
by uvicorn with the real read side (views followed in-process) and tokens from the token store.

王秀英 (registered poor, hypertension) signed 120 days ago; a green-channel referral to 鼓楼医院
went up 40 days ago, was accepted, she attended a booked expert slot, was admitted, returned
and acknowledged, then followed up; yesterday a second, urgent referral went up and awaits the
hospital's decision. 张建华 came back from the hospital two days ago, not yet acknowledged.
李国强 belongs to another center (scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from fastapi import FastAPI

from api.main import create_app
from api.tokens import Role
from domain.application import CareCoordination
from domain.common import Actor
from jiayi.bootstrap import Projections, build_application, build_projections
from jiayi.settings import Settings
from tests.e2e.server import Served
from tests.world import build_world, national_id


@dataclass
class PagesWorld:
    served: Served
    app: CareCoordination
    views: Projections
    center: UUID
    other_center: UUID
    hospital: UUID
    team: UUID
    patient: UUID
    first_referral: UUID
    pending_referral: UUID
    returned_referral: UUID
    other_patient: UUID
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.served.url

    def stop(self) -> None:
        self.served.stop()
        self.views.close()
        self.app.close()


def tell_story(app: CareCoordination) -> dict[str, UUID]:
    w = build_world(app)
    now = datetime.now(UTC)

    def ago(days: float) -> datetime:
        return now - timedelta(days=days)

    desk, gp, nurse = w.center_admin, w.gp, Actor("nurse-1", w.center)
    cardio = w.hospital_staff
    pid = app.register_patient(
        "王秀英",
        sex="F",
        birth_date=datetime(1950, 3, 4).date(),
        national_id=national_id(datetime(1950, 3, 4).date(), 101),
        phone="13800000000",
        center_id=w.center,
        actor=desk,
        tags=("registered_poor", "hypertension"),
        at=ago(130),
    ).id
    app.sign_contract(
        pid, team_id=w.team, package="basic", start=ago(120).date(), actor=gp, at=ago(120)
    )
    first = app.request_referral(
        pid,
        hospital_id=w.hospital,
        department="cardiology",
        reason="血压控制不佳",
        diagnosis="I10",
        urgency="routine",
        actor=gp,
        at=ago(40),
    ).id
    app.accept_referral(first, actor=cardio, note="请带既往病历", at=ago(39.8))
    quota = app.publish_quota(
        w.hospital,
        kind="expert",
        department="cardiology",
        session_date=ago(38).date(),
        slots=5,
        release_at=ago(38.5),
        actor=cardio,
        at=ago(45),
        expert="周主任",
        half_day="am",
        reserved_for_center=w.center,
    ).id
    with app.recorded_as_of(ago(39.5)):  # booked before the cutoff, as it happened
        booking = app.book_slot(quota, patient_id=pid, actor=gp, referral_id=first, at=ago(39.5)).id
    app.record_arrival(first, actor=cardio, at=ago(38))
    app.record_attendance(quota, booking_id=booking, attended=True, actor=cardio, at=ago(38))
    app.record_admission(first, ward="心内科二病区", actor=cardio, at=ago(37.9))
    app.return_to_community(
        first,
        summary="血压平稳出院",
        prescriptions=[],
        rehabilitation="低盐饮食，每日监测血压",
        follow_up_due=ago(16).date(),
        actor=cardio,
        at=ago(30),
    )
    app.acknowledge_return(first, actor=nurse, at=ago(29.5))
    app.record_follow_up(pid, on=ago(20).date(), kind="face_to_face", actor=gp, at=ago(20))
    pending = app.request_referral(
        pid,
        hospital_id=w.hospital,
        department="cardiology",
        reason="胸痛待查",
        diagnosis="R07.4",
        urgency="urgent",
        actor=gp,
        at=ago(1),
    ).id

    second = app.register_patient(
        "张建华",
        sex="M",
        birth_date=datetime(1948, 7, 1).date(),
        national_id=national_id(datetime(1948, 7, 1).date(), 102),
        phone="13900000000",
        center_id=w.center,
        actor=desk,
        tags=("type2_diabetes",),
        at=ago(100),
    ).id
    app.sign_contract(
        second, team_id=w.team, package="basic", start=ago(90).date(), actor=gp, at=ago(90)
    )
    returned = app.request_referral(
        second,
        hospital_id=w.hospital,
        department="cardiology",
        reason="血糖波动",
        diagnosis="E11",
        urgency="routine",
        actor=gp,
        at=ago(10),
    ).id
    app.accept_referral(returned, actor=cardio, at=ago(9))
    app.record_arrival(returned, actor=cardio, at=ago(8))
    app.return_to_community(
        returned,
        summary="好转出院",
        prescriptions=[],
        rehabilitation="监测血糖",
        follow_up_due=(now + timedelta(days=12)).date(),
        actor=cardio,
        at=ago(2),
    )

    other = app.register_patient(
        "李国强",
        sex="M",
        birth_date=datetime(1960, 1, 1).date(),
        national_id=national_id(datetime(1960, 1, 1).date(), 103),
        phone="13700000000",
        center_id=w.other_center,
        actor=Actor("desk", w.other_center),
        at=ago(50),
    ).id
    return {
        "center": w.center,
        "other_center": w.other_center,
        "hospital": w.hospital,
        "team": w.team,
        "patient": pid,
        "first_referral": first,
        "pending_referral": pending,
        "returned_referral": returned,
        "other_patient": other,
    }


def serve_world(settings: Settings, api_settings: Settings | None = None) -> PagesWorld:
    app = build_application(settings)
    ids = tell_story(app)
    views = build_projections(settings, app, run=True, poll=0.02)
    assert views.queries.wait_for(app.max_position(), timeout=30)
    api: FastAPI = create_app(api_settings or settings, app=app, queries=views.queries)
    served = Served(api).start()
    tokens = {
        "center": served.token(Role.CENTER_STAFF, ids["center"], "鼓楼区", staff="nurse-1"),
        "other_center": served.token(Role.CENTER_STAFF, ids["other_center"], "江宁区", "desk"),
        "hospital": served.token(Role.HOSPITAL_STAFF, ids["hospital"], "鼓楼区", "cardio-desk"),
        "coordinator": served.token(Role.COORDINATOR, district="鼓楼区", staff="coord-1"),
        "auditor": served.token(Role.AUDITOR, staff="auditor-1"),
    }
    return PagesWorld(served=served, app=app, views=views, tokens=tokens, **ids)

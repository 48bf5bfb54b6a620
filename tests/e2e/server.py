"""A real uvicorn server in a thread on a free loopback port, and a small world built over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import uvicorn
from fastapi import FastAPI

from api.main import create_app
from api.services import Services
from api.tokens import Role
from jiayi.bootstrap import build_application, build_projections
from jiayi.settings import Settings
from tests.world import national_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """``app`` served by uvicorn on 127.0.0.1 until :meth:`stop`."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def services(self) -> Services:
        found: Services = self.app.state.services
        return found

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def token(
        self, role: Role, org: UUID | None = None, district: str | None = None, staff: str = ""
    ) -> str:
        token, _ = self.services.tokens.issue(staff or f"{role}-staff", role, org, district)
        return token


@contextmanager
def serve(settings: Settings) -> Iterator[Served]:
    """The whole API on ``settings``: the application, the real read side (views and their
    runner following the log in-process) and uvicorn; all closed afterwards."""
    app = build_application(settings)
    projections = build_projections(settings, app)
    try:
        server = Served(create_app(settings, app=app, queries=projections.queries)).start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        projections.close()
        app.close()


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@dataclass
class Org:
    id: UUID
    district: str
    token: str = ""


@dataclass
class HttpWorld:
    """Two centers and two hospitals in two districts, a team with a GP, built through the API."""

    http: httpx.Client
    served: Served
    center: Org
    other_center: Org
    hospital: Org
    other_hospital: Org
    team: UUID
    other_team: UUID
    admin: str
    auditor: str
    coordinator: str
    serial: list[int] = field(default_factory=lambda: [100])
    #: (national id, name) of each patient registered through :meth:`patient`.
    identities: dict[UUID, tuple[str, str]] = field(default_factory=dict)

    def post(self, path: str, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(path, json=body or {}, headers=bearer(token))

    def ok(self, path: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.post(path, token, body)
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        found: dict[str, Any] = r.json()
        return found

    @property
    def today(self) -> date:
        """Today in the deployment's time zone (the calendar the rules count days in)."""
        return self.served.services.application().now().date()

    def patient(self, org: Org | None = None, tags: list[str] | None = None) -> UUID:
        org = org or self.center
        self.serial[0] += 1
        birth = date(1950, 3, 4)
        body = {
            "name": "王秀英",
            "sex": "F",
            "birth_date": birth.isoformat(),
            "national_id": national_id(birth, self.serial[0]),
            "phone": "13800000000",
            "tags": tags or ["hypertension"],
        }
        pid = UUID(self.ok("/patients", org.token, body)["id"])
        self.identities[pid] = (body["national_id"], body["name"])
        return pid

    def named(self, patient: UUID) -> dict[str, str]:
        """How the patient names themself at an organisation: national id and name."""
        nid, name = self.identities[patient]
        return {"national_id": nid, "name": name}

    def contracted(self, org: Org | None = None) -> tuple[UUID, UUID]:
        org = org or self.center
        pid = self.patient(org)
        team = self.team if org is self.center else self.other_team
        body = {"patient_id": str(pid), "team_id": str(team), "package": "basic"}
        cid = self.ok("/contracts", org.token, {**body, "start": self.today.isoformat()})["id"]
        return pid, UUID(cid)

    def referral(self, patient: UUID) -> UUID:
        body = {
            "patient_id": str(patient),
            "hospital_id": str(self.hospital.id),
            "department": "cardiology",
            "reason": "血压控制不佳",
            "diagnosis": "I10",
            "urgency": "urgent",
        }
        return UUID(self.ok("/referrals", self.center.token, body)["id"])

    def quota(self, slots: int = 5, center: Org | None = None) -> UUID:
        session = self.today + timedelta(days=2)
        release = datetime.now().astimezone() + timedelta(days=1)
        body = {
            "kind": "expert",
            "department": "cardiology",
            "session_date": session.isoformat(),
            "half_day": "am",
            "expert": "周主任",
            "slots": slots,
            "release_at": release.isoformat(),
            "reserved_for_center": str((center or self.center).id),
        }
        return UUID(self.ok("/quotas", self.hospital.token, body)["id"])


def build_http_world(served: Served, http: httpx.Client) -> HttpWorld:
    admin = served.token(Role.ADMINISTRATOR, staff="root")

    def register(kind: str, name: str, district: str, level: int | None = None) -> Org:
        body: dict[str, Any] = {"kind": kind, "name": name, "district": district}
        if level:
            body["level"] = level
        r = http.post("/organisations", json=body, headers=bearer(admin))
        assert r.status_code == 201, r.text
        org = Org(UUID(r.json()["id"]), district)
        role = Role.HOSPITAL_STAFF if kind == "hospital" else Role.CENTER_STAFF
        org.token = served.token(role, org.id, district, staff=f"{name}-desk")
        return org

    center = register("community_center", "鼓楼社区卫生服务中心", "鼓楼区")
    other_center = register("community_center", "江宁社区卫生服务中心", "江宁区")
    hospital = register("hospital", "鼓楼医院", "鼓楼区", 3)
    other_hospital = register("hospital", "江宁医院", "江宁区", 2)
    teams = []
    for h in (hospital, other_hospital):
        r = http.post(
            f"/organisations/{h.id}/departments",
            json={"code": "cardiology", "name": "心内科"},
            headers=bearer(h.token),
        )
        assert r.status_code == 200, r.text
    for c in (center, other_center):
        r = http.post("/teams", json={"name": "团队一"}, headers=bearer(c.token))
        assert r.status_code == 201, r.text
        team = r.json()["id"]
        r = http.post(
            f"/teams/{team}/members",
            json={"staff_id": f"gp-{c.district}", "name": "李医生", "role": "general_practitioner"},
            headers=bearer(c.token),
        )
        assert r.status_code == 200, r.text
        teams.append(UUID(team))
    return HttpWorld(
        http=http,
        served=served,
        center=center,
        other_center=other_center,
        hospital=hospital,
        other_hospital=other_hospital,
        team=teams[0],
        other_team=teams[1],
        admin=admin,
        auditor=served.token(Role.AUDITOR, staff="auditor-1"),
        coordinator=served.token(Role.COORDINATOR, district="鼓楼区", staff="coord-1"),
    )

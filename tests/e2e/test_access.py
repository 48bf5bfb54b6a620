"""The access matrix: each role x each endpoint x its own and a foreign organisation.

- a role an endpoint does not admit: 403 (whatever the organisation)
- an admitted role acting on another organisation's thing: 404, as if it did not exist
- an admitted role acting on its own: neither 401, 403 nor 404 (the domain may still say 409)
- no token: 401
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from api.tokens import Role
from tests.e2e.server import HttpWorld, bearer

C, H, CO, AU, AD = (
    Role.CENTER_STAFF,
    Role.HOSPITAL_STAFF,
    Role.COORDINATOR,
    Role.AUDITOR,
    Role.ADMINISTRATOR,
)
READERS = {C, H, CO, AU}


@dataclass(frozen=True)
class Endpoint:
    path: str
    roles: frozenset[Role]
    body: dict[str, Any]
    #: Roles for which the target belongs to their organisation (others: foreign only).
    owners: frozenset[Role] = frozenset()
    #: Whether a token of another organisation of the same role is tried (expects 404).
    foreign: bool = True


def E(
    path: str,
    roles: set[Role],
    body: dict[str, Any] | None = None,
    owners: set[Role] | None = None,
    foreign: bool = True,
) -> Endpoint:
    return Endpoint(
        path, frozenset(roles), body or {}, frozenset(roles if owners is None else owners), foreign
    )


@pytest.fixture
def targets(world: HttpWorld) -> dict[str, str]:
    pid, cid = world.contracted()
    pid2, _ = world.contracted()
    rid = world.referral(pid)
    rid2 = world.referral(pid2)
    qid = world.quota(slots=5)
    bid = world.ok(f"/quotas/{qid}/bookings", world.center.token, {"patient_id": str(pid)})["id"]
    return {
        "pid": str(pid),
        "pid2": str(pid2),
        "cid": str(cid),
        "rid": str(rid),
        "rid2": str(rid2),
        "qid": str(qid),
        "bid": bid,
        "team": str(world.team),
        "center": str(world.center.id),
        "hospital": str(world.hospital.id),
        "today": world.today.isoformat(),
        "due": (world.today + timedelta(days=10)).isoformat(),
    }


def commands() -> list[Endpoint]:
    plan = {
        "summary": "好转出院",
        "prescriptions": [{"drug": "二甲双胍"}],
        "follow_up_due": "{due}",
    }
    return [
        E(
            "/organisations",
            {AD},
            {"kind": "community_center", "name": "新中心", "district": "鼓楼区"},
            foreign=False,
        ),
        E("/organisations/{hospital}/departments", {H}, {"code": "neurology", "name": "神经内科"}),
        E(
            "/organisations/{center}/residents",
            {C},
            {"total": 900, "key_population": 300, "as_of": "{today}"},
        ),
        E("/teams", {C}, {"name": "团队二"}, foreign=False),
        E("/teams/{team}/members", {C}, {"staff_id": "nurse-9", "name": "张护士", "role": "nurse"}),
        E("/teams/{team}/members/nurse-9/remove", {C}),
        E(
            "/patients",
            {C},
            {
                "name": "李四",
                "sex": "M",
                "birth_date": "1960-01-02",
                "national_id": "11010519600102003X",
                "phone": "1",
            },
            foreign=False,
        ),
        E("/patients/{pid}/tags", {C}, {"tag": "type2_diabetes"}),
        E("/patients/{pid}/follow-ups", {C}, {"on": "{today}", "kind": "phone"}),
        E(
            "/contracts",
            {C},
            {"patient_id": "{pid}", "team_id": "{team}", "package": "basic", "start": "{today}"},
        ),
        E(
            "/contracts/households",
            {C},
            {"patient_ids": ["{pid}"], "team_id": "{team}", "package": "basic", "start": "{today}"},
        ),
        E("/contracts/{cid}/renew", {C}, {"years": 2}),
        E("/contracts/{cid}/change-team", {C}, {"team_id": "{team}", "reason": "就近"}),
        E("/contracts/{cid}/expire", {C}),
        E(
            "/referrals",
            {C, H},
            {
                "patient_id": "{pid2}",
                "hospital_id": "{hospital}",
                "department": "cardiology",
                "reason": "复查",
                "diagnosis": "I10",
            },
            owners={C},
        ),
        E(
            "/referrals/returns",
            {H},
            {**plan, "patient_id": "{pid2}", "department": "cardiology"},
            foreign=False,
        ),
        E("/referrals/{rid}/accept", {H}),
        E("/referrals/{rid}/reject", {H}, {"reason_code": "other"}),
        E("/referrals/{rid}/arrival", {H}),
        E("/referrals/{rid}/admission", {H}, {"ward": "一病区"}),
        E("/referrals/{rid}/return", {H}, plan),
        E("/referrals/{rid}/acknowledge", {C, H}, owners={C}),
        E("/referrals/{rid2}/cancel", {C, H}, {"reason": "患者拒绝"}, owners={C}),
        E(
            "/quotas",
            {H},
            {
                "kind": "bed",
                "department": "cardiology",
                "ward": "一病区",
                "session_date": "{due}",
                "slots": 2,
                "release_at": "2026-01-01T00:00:00+00:00",
                "reserved_for_district": "鼓楼区",
            },
            foreign=False,
        ),
        E("/quotas/{qid}/bookings", {C}, {"patient_id": "{pid2}"}),
        E("/quotas/{qid}/bookings/{bid}/attendance", {H}, {"attended": True}),
        E("/quotas/{qid}/bookings/{bid}/cancel", {C}, {"reason": "已好转"}),
        E("/quotas/{qid}/release", {H}),
        E("/patients/{pid}/move-away", {C}, {"destination": "上海市"}),
        E("/contracts/{cid}/terminate", {C}, {"reason": "迁出"}),
    ]


QUERIES = [
    ("/patients?q=王", READERS),
    ("/patients/{pid}", READERS),
    ("/patients/{pid}/timeline", READERS),
    ("/referrals/{rid}", READERS),
    ("/quotas", READERS),
    ("/quotas/{qid}", READERS),
    ("/teams", {C, CO, AU}),
    ("/teams/{team}/workload", {C, CO, AU}),
    ("/worklists/hospitals/{hospital}", {H, CO, AU}),
    ("/worklists/centers/{center}", {C, CO, AU}),
    ("/kpis?start=2026-01-01&end=2026-12-31", {C, CO, AU}),
]


def fill(value: Any, t: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**t)
    if isinstance(value, list):
        return [fill(v, t) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, t) for k, v in value.items()}
    return value


def test_every_command_admits_its_roles_and_only_their_own_organisation(
    world: HttpWorld, targets: dict[str, str]
) -> None:
    own = {
        C: world.center.token,
        H: world.hospital.token,
        CO: world.coordinator,
        AU: world.auditor,
        AD: world.admin,
    }
    foreign = {C: world.other_center.token, H: world.other_hospital.token}
    wrong: list[str] = []

    def expect(ok: bool, what: str, status: int, text: str) -> None:
        if not ok:
            wrong.append(f"{what}: {status} {text[:160]}")

    for ep in commands():
        path, body = fill(ep.path, targets), fill(ep.body, targets)
        r = world.http.post(path, json=body)
        expect(r.status_code == 401, f"no token {path}", r.status_code, r.text)
        for role in Role:  # disallowed roles first: they must not change anything
            if role in ep.roles:
                continue
            r = world.http.post(path, json=body, headers=bearer(own[role]))
            expect(r.status_code == 403, f"{role} on {path}", r.status_code, r.text)
        for role in sorted(ep.roles):
            if ep.foreign and role in foreign:
                r = world.http.post(path, json=body, headers=bearer(foreign[role]))
                expect(r.status_code == 404, f"foreign {role} on {path}", r.status_code, r.text)
        for role in sorted(ep.roles):
            r = world.http.post(path, json=body, headers=bearer(own[role]))
            if role in ep.owners:
                expect(
                    r.status_code not in (401, 403, 404, 500),
                    f"own {role} on {path}",
                    r.status_code,
                    r.text,
                )
            else:
                expect(r.status_code == 404, f"non-owner {role} on {path}", r.status_code, r.text)
    assert not wrong, "\n".join(wrong)


def test_every_query_admits_its_roles(world: HttpWorld, targets: dict[str, str]) -> None:
    tokens = {
        C: world.center.token,
        H: world.hospital.token,
        CO: world.coordinator,
        AU: world.auditor,
        AD: world.admin,
    }
    wrong: list[str] = []
    for template, roles in QUERIES:
        path = fill(template, targets)
        if world.http.get(path).status_code != 401:
            wrong.append(f"no token {path}")
        for role, token in tokens.items():
            r = world.http.get(path, headers=bearer(token))
            allowed = r.status_code != 403
            if allowed != (role in roles) or (r.status_code >= 500 and r.status_code != 503):
                wrong.append(f"{role} on {path}: {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


def test_only_auditors_read_as_of_a_moment(world: HttpWorld, targets: dict[str, str]) -> None:
    path = f"/patients/{targets['pid']}/timeline"
    params = {"as_of": "2026-01-01T00:00:00+00:00"}
    for token in (world.center.token, world.coordinator, world.hospital.token):
        r = world.http.get(path, params=params, headers=bearer(token))
        assert r.status_code == 403, r.text
    r = world.http.get(path, params=params, headers=bearer(world.auditor))
    assert r.status_code in (200, 503), r.text

"""The access matrix: each role x each endpoint x its own and a foreign organisation.

- a role an endpoint does not admit: 403 (whatever the organisation)
- an admitted role acting on another organisation's thing: 404, as if it did not exist
- an admitted role acting on its own: neither 401, 403 nor 404 (the domain may still say 409)
- no token: 401
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
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
    nid2, name2 = world.identities[pid2]
    return {
        "pid": str(pid),
        "nid": world.identities[pid][0],
        "pid2": str(pid2),
        "nid2": nid2,
        "name2": name2,
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
            {**plan, "national_id": "{nid2}", "name": "{name2}", "department": "cardiology"},
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
        # asked for by naming the resident: its own patient is already at its center (409)
        E(
            "/transfers",
            {C},
            {"national_id": "{nid}", "name": "王秀英", "team_id": "{team}", "consent": "同意书 1"},
            foreign=False,
        ),
        E("/patients/{pid}/transfer/release", {C}),
        E("/patients/{pid}/transfer/decline", {C}, {"reason": "治疗中"}),
        # nothing is pending: no organisation has a request of this patient's to withdraw
        E("/patients/{pid}/transfer/withdraw", {C}, owners=set()),
        E("/patients/{pid}/move-away", {C}, {"destination": "上海市"}),
        E("/contracts/{cid}/terminate", {C}, {"reason": "迁出"}),
        E("/patients/{pid}/erasure", {AD}, {"reason": "保存期限届满"}, foreign=False),
    ]


#: A patient search posts its term (``POST`` paths below carry this body).
SEARCH = {"q": "秀英"}

QUERIES = [
    ("POST /patients/search", READERS),
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
    ("/audit/access?patient={pid}", {AU}),
    ("/audit/access/report?patient={pid}", {AU}),
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
        if query(world, path, None).status_code != 401:
            wrong.append(f"no token {path}")
        for role, token in tokens.items():
            r = query(world, path, token)
            allowed = r.status_code != 403
            if allowed != (role in roles) or r.status_code >= 500:
                wrong.append(f"{role} on {path}: {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


#: Query endpoints naming one thing: (path, roles admitted, roles the target is theirs).
#: The targets belong to the center and its district's coordinator; the referral, the quota
#: and (through the referral) the patient are the hospital's too. An auditor sees everything.
ITEMS = [
    ("/patients/{pid}", READERS),
    ("/patients/{pid}/timeline", READERS),
    ("/referrals/{rid}", READERS),
    ("/quotas/{qid}", READERS),
    ("/teams/{team}/workload", {C, CO, AU}),
    ("/worklists/hospitals/{hospital}", {H, CO, AU}),
    ("/worklists/centers/{center}", {C, CO, AU}),
    ("/kpis?start=2026-01-01&end=2026-12-31&center_id={center}", {C, CO, AU}),
    ("/audit/access?patient={pid}", {AU}),
]
#: Lists: the target's id is among the items for its owners only.
LISTS = [
    ("POST /patients/search", "pid", READERS),
    ("/quotas", "qid", READERS),
    ("/teams", "team", {C, CO, AU}),
]


def test_every_query_shows_its_own_and_hides_the_foreign(
    world: HttpWorld, targets: dict[str, str]
) -> None:
    own = {
        C: world.center.token,
        H: world.hospital.token,
        CO: world.coordinator,
        AU: world.auditor,
    }
    foreign = {
        C: world.other_center.token,
        H: world.other_hospital.token,
        CO: world.served.token(Role.COORDINATOR, district="江宁区", staff="coord-2"),
    }
    last = max(targets_positions(world))
    wrong: list[str] = []
    for template, roles in ITEMS:
        path = fill(template, targets)
        for role in sorted(roles):
            r = get(world, path, own[role], wait_for_position=last)
            if r.status_code != 200:
                wrong.append(f"own {role} on {path}: {r.status_code} {r.text[:120]}")
            if role in foreign:
                r = get(world, path, foreign[role])
                if (r.status_code, r.json().get("code")) != (404, "not-found"):
                    wrong.append(f"foreign {role} on {path}: {r.status_code} {r.text[:120]}")
    for template, key, roles in LISTS:
        path = fill(template, targets)
        for role in sorted(roles):
            for whose, tokens in (("own", own), ("foreign", foreign)):
                if role not in tokens:
                    continue
                r = query(world, path, tokens[role], limit=500)
                ids = [x["id"] for x in r.json().get("items", [])]
                if r.status_code != 200 or (targets[key] in ids) != (whose == "own"):
                    wrong.append(f"{whose} {role} lists {path}: {r.status_code} {ids[:5]}")
    assert not wrong, "\n".join(wrong)


def get(world: HttpWorld, path: str, token: str, **params: Any) -> httpx.Response:
    """GET ``path`` (which may carry a query) with more ``params`` merged in."""
    return world.http.get(httpx.URL(path).copy_merge_params(params), headers=bearer(token))


def query(world: HttpWorld, path: str, token: str | None, **params: Any) -> httpx.Response:
    """A query: GET ``path``, or, for ``POST <path>``, a post of :data:`SEARCH`."""
    headers = bearer(token) if token else {}
    if path.startswith("POST "):
        url = httpx.URL(path.removeprefix("POST ")).copy_merge_params(params)
        return world.http.post(url, json=SEARCH, headers=headers)
    return world.http.get(httpx.URL(path).copy_merge_params(params), headers=headers)


def targets_positions(world: HttpWorld) -> list[int]:
    """The log's end as a write answered it: a harmless tag on a fresh patient."""
    pid = world.patient()
    body = {"tag": "hypertension"}
    return [world.ok(f"/patients/{pid}/tags", world.center.token, body)["position"]]


def test_a_foreign_hospital_and_district_read_a_referral_as_absent(
    world: HttpWorld, targets: dict[str, str]
) -> None:
    """A referral addressed to another hospital, a patient of another district: 404."""
    pid, _ = world.contracted(world.other_center)
    body = {
        "patient_id": str(pid),
        "hospital_id": str(world.other_hospital.id),
        "department": "cardiology",
        "reason": "复查",
        "diagnosis": "I10",
    }
    made = world.ok("/referrals", world.other_center.token, body)
    rid, pos = made["id"], made["position"]
    wait = {"wait_for_position": pos}
    for token in (world.hospital.token, world.center.token, world.coordinator):
        for path in (f"/referrals/{rid}", f"/patients/{pid}", f"/patients/{pid}/timeline"):
            r = world.http.get(path, params=wait, headers=bearer(token))
            assert r.status_code == 404, (path, r.text)
    for token in (world.other_hospital.token, world.other_center.token, world.auditor):
        r = world.http.get(f"/referrals/{rid}", params=wait, headers=bearer(token))
        assert r.status_code == 200, r.text
    r = world.http.get(
        f"/teams/{world.other_team}/workload", params=wait, headers=bearer(world.center.token)
    )
    assert (r.status_code, r.json()["code"]) == (404, "not-found")


def test_only_auditors_read_as_of_a_moment(world: HttpWorld, targets: dict[str, str]) -> None:
    path = f"/patients/{targets['pid']}/timeline"
    before = {"as_of": "2026-01-01T00:00:00+00:00"}
    for token in (world.center.token, world.coordinator, world.hospital.token):
        r = world.http.get(path, params=before, headers=bearer(token))
        assert (r.status_code, r.json()["code"]) == (403, "role-not-allowed"), r.text
    # before the patient was registered the patient did not exist; now the timeline is there
    r = world.http.get(path, params=before, headers=bearer(world.auditor))
    assert r.status_code == 404, r.text
    pos = targets_positions(world)[0]
    now = datetime.now(UTC).isoformat()
    r = world.http.get(
        path, params={"as_of": now, "wait_for_position": pos}, headers=bearer(world.auditor)
    )
    assert r.status_code == 200, r.text
    assert [e["kind"] for e in r.json()["items"]][:1] == ["registry.registered"]


def test_centers_of_a_district_see_the_quotas_reserved_for_it(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    body = {
        "kind": "expert",
        "department": "cardiology",
        "session_date": (world.today + timedelta(days=2)).isoformat(),
        "half_day": "pm",
        "expert": "周主任",
        "slots": 3,
        "release_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "reserved_for_district": world.center.district,
    }
    made = world.ok("/quotas", world.hospital.token, body)
    qid, wait = made["id"], {"wait_for_position": made["position"]}
    # a token of the center naming no district sees it too (the directory knows the district)
    bare = world.served.token(Role.CENTER_STAFF, world.center.id, staff="nurse-2")
    for token in (world.center.token, bare):
        r = world.http.get(f"/quotas/{qid}", params=wait, headers=bearer(token))
        assert r.status_code == 200, r.text
        listed = world.http.get("/quotas", params=wait, headers=bearer(token)).json()["items"]
        assert qid in [q["id"] for q in listed]
    # a center of another district does not
    r = world.http.get(f"/quotas/{qid}", params=wait, headers=bearer(world.other_center.token))
    assert r.status_code == 404, r.text
    listed = world.http.get("/quotas", params=wait, headers=bearer(world.other_center.token))
    assert qid not in [q["id"] for q in listed.json()["items"]]
    # and what the center sees it may book
    world.ok(f"/quotas/{qid}/bookings", world.center.token, {"patient_id": str(pid)})

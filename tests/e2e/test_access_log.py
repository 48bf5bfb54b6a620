"""The read access log over HTTP, on both stores: reads by each role are recorded with who,
what and how many rows; a foreign (404) read records nothing; auditors read the log and a
patient's report (and their reading is recorded too); a clean stop loses nothing; search terms
stay out of URLs and logs."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

import httpx

from api.errors import NOT_VISIBLE
from api.main import create_app
from api.tokens import Role
from audit.access import AccessLog, verify_access_log
from jiayi.bootstrap import build_application, build_projections
from jiayi.settings import Settings
from tests.e2e.server import HttpWorld, Served, bearer
from tests.world import build_world


def get(world: HttpWorld, path: str, token: str, **params: Any) -> httpx.Response:
    return world.http.get(path, params=params, headers=bearer(token))


def search(world: HttpWorld, token: str, q: str) -> httpx.Response:
    return world.http.post("/patients/search", json={"q": q}, headers=bearer(token))


def access(world: HttpWorld, patient: UUID, **params: Any) -> list[dict[str, Any]]:
    world.served.services.queries.flush()
    r = get(world, "/audit/access", world.auditor, patient=str(patient), limit=500, **params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_reads_by_each_role_appear_in_the_access_log(world: HttpWorld) -> None:
    pid, _ = world.contracted()
    rid = world.referral(pid)
    nid, _ = world.identities[pid]
    last = world.ok(f"/patients/{pid}/tags", world.center.token, {"tag": "type2_diabetes"})
    wait = {"wait_for_position": last["position"]}
    center, hospital = world.center.token, world.hospital.token

    # what each reader got
    assert get(world, f"/patients/{pid}", center, **wait).status_code == 200
    timeline = get(world, f"/patients/{pid}/timeline", center).json()["items"]
    found = search(world, center, nid).json()["items"]
    assert [p["id"] for p in found] == [str(pid)]
    assert get(world, f"/referrals/{rid}", hospital).status_code == 200
    worklist = get(world, f"/worklists/hospitals/{world.hospital.id}", hospital).json()["items"]
    assert [r["patient_id"] for r in worklist] == [str(pid)]
    district = get(world, f"/patients/{pid}/timeline", world.coordinator, limit=2).json()
    assert len(district["items"]) == 2
    assert get(world, f"/patients/{pid}", world.auditor).status_code == 200
    # foreign readers: 404 / nothing found; nothing about the patient is recorded for them
    for token in (world.other_center.token, world.other_hospital.token):
        for path in (f"/patients/{pid}", f"/patients/{pid}/timeline", f"/referrals/{rid}"):
            assert get(world, path, token).status_code == 404
        assert search(world, token, nid).json()["items"] == []

    entries = access(world, pid)
    got = {
        (e["staff_id"], e["role"], e["org_id"], e["district"], e["resource"], e["rows"])
        for e in entries
    }
    c, h = str(world.center.id), str(world.hospital.id)
    desk, cardio = "鼓楼社区卫生服务中心-desk", "鼓楼医院-desk"
    assert got == {
        (desk, "center_staff", c, "鼓楼区", "registry", 1),
        (desk, "center_staff", c, "鼓楼区", "timeline", len(timeline)),
        (desk, "center_staff", c, "鼓楼区", "search", 1),
        (cardio, "hospital_staff", h, "鼓楼区", "referral", 1),
        (cardio, "hospital_staff", h, "鼓楼区", "worklist.hospital", 1),
        ("coord-1", "coordinator", None, "鼓楼区", "timeline", 2),
        ("auditor-1", "auditor", None, None, "registry", 1),
    }
    assert entries[0]["org_name"] is None or isinstance(entries[0]["org_name"], str)
    assert {e["org_name"] for e in entries if e["org_id"] == c} == {"鼓楼社区卫生服务中心"}
    # newest first; the auditor's own reading of the log is the newest entry next time
    assert [e["position"] for e in entries] == sorted(
        (e["position"] for e in entries), reverse=True
    )
    again = access(world, pid)
    assert (again[0]["staff_id"], again[0]["resource"], again[0]["rows"]) == (
        "auditor-1",
        "access-log",
        len(entries),
    )
    assert {e["patient_id"] for e in again} == {str(pid)}


def test_only_auditors_read_the_access_log_and_its_report(world: HttpWorld) -> None:
    pid = world.patient()
    pos = world.ok(f"/patients/{pid}/tags", world.center.token, {"tag": "type2_diabetes"})
    assert get(world, f"/patients/{pid}/timeline", world.center.token, wait_for_position=pos["position"]).is_success  # fmt: skip
    for token in (world.center.token, world.hospital.token, world.coordinator, world.admin):
        for path in ("/audit/access", "/audit/access/report"):
            r = get(world, path, token, patient=str(pid))
            assert (r.status_code, r.json()["code"]) == (403, "role-not-allowed"), r.text
    for path in ("/audit/access", "/audit/access/report"):
        r = get(world, path, world.auditor, patient=str(uuid4()))
        assert (r.status_code, r.json()["code"], r.json()["detail"]) == (
            404,
            "not-found",
            NOT_VISIBLE,
        )
    world.served.services.queries.flush()
    report = get(world, "/audit/access/report", world.auditor, patient=str(pid)).json()
    assert report["patient"] == str(pid)
    readers = {(r["staff_id"], r["role"]): r for r in report["readers"]}
    mine = readers["鼓楼社区卫生服务中心-desk", "center_staff"]
    assert mine["reads"] == 1 and mine["resources"] == ["timeline"] and mine["rows"] >= 2
    assert mine["org_name"] == "鼓楼社区卫生服务中心"
    text = get(world, "/audit/access/report", world.auditor, patient=str(pid), format="csv")
    assert text.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(text.text)))
    assert lines[0] == ["at", "staff_id", "org_id", "org_name", "role", "district", "resource", "rows"]  # fmt: skip
    assert [lines[1][1], lines[1][4], lines[1][6]] == [
        "鼓楼社区卫生服务中心-desk",
        "center_staff",
        "timeline",
    ]
    # both readings of the report are recorded (newest first)
    assert [e["resource"] for e in access(world, pid)][:3] == [
        "access-report",
        "access-report",
        "timeline",
    ]


def test_a_clean_stop_writes_every_read_still_queued(settings: Settings) -> None:
    app = build_application(settings)
    views = build_projections(settings, app, poll=0.02)
    # a writer that only the stop wakes: whatever is in the table came from the clean stop
    views.queries.access_log.close()
    views.queries.access_log = AccessLog(views.location.open, interval=3600, batch=100_000)
    try:
        world = build_world(app)
        patients = [world.contracted_patient(serial=i) for i in range(5)]
        assert views.queries.wait_for(app.max_position())
        served = Served(create_app(settings, app=app, queries=views.queries)).start()
        token = served.token(Role.AUDITOR, staff="aud-stop")
        with httpx.Client(base_url=served.url, timeout=30) as http:
            for _ in range(20):
                for pid in patients:
                    r = http.get(f"/patients/{pid}/timeline", headers=bearer(token))
                    assert r.status_code == 200
        store = views.queries.store
        assert store.one("SELECT COUNT(*) AS n FROM access_log") == {"n": 0}
        served.stop()  # the lifespan's shutdown, as on SIGTERM
        assert views.queries.access_log.pending == 0
        found = store.one("SELECT COUNT(*) AS n FROM access_log WHERE staff_id = 'aud-stop'")
        assert found == {"n": 100}
        assert verify_access_log(store).ok
    finally:
        views.close()
        app.close()


# --- search terms stay out of URLs and logs ------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("httpx", "httpcore")):
            return  # the test's own client
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


@contextmanager
def captured() -> Iterator[tuple[Lines, Lines]]:
    """Uvicorn's access log (at INFO, as `jiayi serve` writes it) and every other log record
    (at DEBUG) while the block runs."""
    access, everything = Lines(), Lines()
    access_logger, root = logging.getLogger("uvicorn.access"), logging.getLogger()
    levels = access_logger.level, root.level
    access_logger.addHandler(access)
    access_logger.setLevel(logging.INFO)
    root.addHandler(everything)
    root.setLevel(logging.DEBUG)
    try:
        yield access, everything
    finally:
        access_logger.removeHandler(access)
        root.removeHandler(everything)
        access_logger.setLevel(levels[0])
        root.setLevel(levels[1])


def test_search_terms_stay_out_of_urls_and_logs(world: HttpWorld) -> None:
    pid = world.patient()
    nid, name = world.identities[pid]
    pos = world.ok(f"/patients/{pid}/tags", world.center.token, {"tag": "type2_diabetes"})
    token = world.center.token
    assert get(world, f"/patients/{pid}", token, wait_for_position=pos["position"]).is_success
    with captured() as (access_lines, other_lines):
        found = search(world, token, nid)
        assert [p["id"] for p in found.json()["items"]] == [str(pid)]
        assert search(world, token, name).status_code == 200
        assert search(world, token, "王").status_code == 422  # refused, and not echoed
        assert nid not in search(world, token, nid[:1]).text
        # the old way, a term in the URL: gone, and the URL is not logged with it
        old = get(world, "/patients", token, q=nid)
        assert old.status_code == 405 and nid not in old.text
        # the page's search form posts too
        http = world.http
        sign_in = http.get("/ui/sign-in").text.split('name="csrf" value="')[1].split('"')[0]
        assert http.post("/ui/sign-in", data={"csrf": sign_in, "token": token}).status_code == 303
        page = http.get("/ui/patients")
        assert 'method="post" action="/ui/patients"' in page.text
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        result = http.post("/ui/patients", data={"csrf": csrf, "q": nid})
        assert result.status_code == 200 and f"/ui/patients/{pid}" in result.text
        http.cookies.clear()
        # a GET with a query string of its own: logged without it
        assert get(world, f"/patients/{pid}/timeline", token, since="2000-01-01T00:00:00Z").is_success  # fmt: skip
    assert any("/patients/search" in line for line in access_lines.lines)
    assert any(f"/patients/{pid}/timeline " in line for line in access_lines.lines)
    for line in access_lines.lines + other_lines.lines:
        assert nid not in line and name not in line, line
        assert "?" not in line.split('"')[1] if '"' in line else True, line
    world.served.services.queries.flush()
    # the access log holds which patients a search found, never the term
    rows = world.served.services.queries.store.rows(
        "SELECT * FROM access_log WHERE resource = 'search'"
    )
    assert rows and all(nid not in str(r) and name not in str(r) for r in rows)

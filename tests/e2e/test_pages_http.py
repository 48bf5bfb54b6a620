"""The web pages over plain HTTP (no browser): sign-in, scope, roles, language, as-of, CSRF and
domain errors shown as pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from domain.common import Actor
from jiayi.settings import Settings
from projections.queries import Scope
from tests.e2e.pages_world import PagesWorld, serve_world
from tests.e2e.server import Served, bearer, free_port
from tests.world import national_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PagesWorld]:
    data = Path(tmp_path_factory.mktemp("pages")) / "data"
    w = serve_world(Settings(data_dir=data, postgres_url=None, ui_language="zh"))
    yield w
    w.stop()


def client(world: PagesWorld, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=world.url, timeout=30, headers=headers)


def csrf(http: httpx.Client) -> str:
    page = http.get("/ui/sign-in")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def search(http: httpx.Client, q: str) -> httpx.Response:
    """The patients page's search form: the term is posted, with the form token."""
    page = http.get("/ui/patients")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text
    r = http.post("/ui/patients", data={"csrf": token.group(1), "q": q})
    assert r.status_code == 200, r.text
    return r


@contextmanager
def signed_in(world: PagesWorld, who: str, **headers: str) -> Iterator[httpx.Client]:
    with client(world, **headers) as http:
        r = http.post("/ui/sign-in", data={"csrf": csrf(http), "token": world.tokens[who]})
        assert r.status_code == 303, r.text
        yield http


def test_pages_need_a_signed_in_token(world: PagesWorld) -> None:
    with client(world) as http:
        r = http.get(f"/ui/patients/{world.patient}")
        assert r.status_code == 303
        assert r.headers["location"] == f"/ui/sign-in?next=/ui/patients/{world.patient}"
        token = csrf(http)
        bad = http.post("/ui/sign-in", data={"csrf": token, "token": "jy_nope_nope"})
        assert bad.status_code == 401
        assert "令牌无效或已被吊销" in bad.text
        assert "jiayi_session" not in bad.headers.get("set-cookie", "")
        no_csrf = http.post("/ui/sign-in", data={"csrf": "x" * 40, "token": world.tokens["center"]})
        assert no_csrf.status_code == 403


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_clears_it(world: PagesWorld) -> None:
    with client(world) as http:
        r = http.post("/ui/sign-in", data={"csrf": csrf(http), "token": world.tokens["center"]})
        assert r.status_code == 303 and r.headers["location"] == "/ui/patients"
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("jiayi_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert http.get("/ui/patients").status_code == 200
        page = http.get("/ui/patients")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        out = http.post("/ui/sign-out", data={"csrf": token.group(1)})
        assert out.status_code == 303
        assert http.get("/ui/patients").status_code == 303


def test_a_center_cannot_open_another_centers_patient(world: PagesWorld) -> None:
    with signed_in(world, "other_center") as http:
        r = http.get(f"/ui/patients/{world.patient}")
        assert r.status_code == 404
        assert "未找到，或您无权查看" in r.text
        assert "王秀英" not in r.text
        assert "王秀英" not in search(http, "王秀").text
    with signed_in(world, "center") as http:
        assert "王秀英" in search(http, "王秀").text
        r = http.get(f"/ui/patients/{world.patient}")
        assert r.status_code == 200 and "王秀英" in r.text
        assert http.get(f"/ui/patients/{world.other_patient}").status_code == 404
        assert http.get("/ui/patients/not-an-id").status_code == 404


def test_roles_per_page(world: PagesWorld) -> None:
    with signed_in(world, "hospital") as http:
        assert http.get("/ui/teams").status_code == 403
        assert http.get("/ui/worklists/center").status_code == 403
        assert http.get("/ui/worklists/hospital").status_code == 200
    with signed_in(world, "center") as http:
        assert http.get("/ui/worklists/hospital").status_code == 403
        assert http.get(f"/ui/teams/{world.team}").status_code == 200


def test_language_from_parameter_cookie_browser_or_setting(world: PagesWorld) -> None:
    with signed_in(world, "center", **{"Accept-Language": "en-GB,en;q=0.9"}) as http:
        assert "Patients" in http.get("/ui/patients").text
        chosen = http.get("/ui/patients", params={"lang": "zh"})
        assert '<html lang="zh-CN">' in chosen.text
        assert "jiayi_lang=zh" in chosen.headers["set-cookie"]
        assert "患者" in http.get("/ui/patients").text  # the cookie wins over the browser
    with signed_in(world, "center", **{"Accept-Language": "fr, en;q=0.5"}) as http:
        assert '<html lang="en">' in http.get("/ui/patients").text
    with signed_in(world, "center") as http:  # no preference: JIAYI_UI_LANGUAGE
        assert '<html lang="zh-CN">' in http.get("/ui/patients").text


def test_as_of_is_for_auditors_and_shows_the_past(world: PagesWorld) -> None:
    before = datetime.now(UTC)
    world.app.acknowledge_return(world.returned_referral, actor=Actor("nurse-1", world.center))
    assert world.views.queries.wait_for(world.app.max_position())
    with signed_in(world, "center") as http:
        r = http.get(f"/ui/patients/{world.patient}", params={"as_of": before.isoformat()})
        assert r.status_code == 403
        assert "只有审计人员" in r.text
        assert (
            http.get(f"/ui/teams/{world.team}", params={"as_of": before.isoformat()}).status_code
            == 403
        )
    with signed_in(world, "auditor", **{"Accept-Language": "en"}) as http:
        live = http.get("/ui/worklists/center", params={"org": str(world.center)})
        assert str(world.returned_referral) not in live.text
        journey = http.get(
            "/ui/patients/" + _patient_of(world), params={"as_of": before.isoformat()}
        )
        assert journey.status_code == 200
        assert 'id="as-of-banner"' in journey.text
        assert 'data-status="returned"' in journey.text  # not yet acknowledged back then
        now = http.get("/ui/patients/" + _patient_of(world))
        assert 'data-status="acknowledged"' in now.text
        assert "care relation: registered center" in now.text  # auditors see relations
        team = http.get(f"/ui/teams/{world.team}", params={"as_of": before.isoformat()})
        assert team.status_code == 200 and 'id="as-of-banner"' in team.text
        assert http.get(f"/ui/teams/{world.team}", params={"as_of": "yesterday"}).status_code == 422
        later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        for moment in ("0001-01-01T00:30:00+01:00", "0001-01-01T00:00", "9999-12-31T23:59", later):
            r = http.get(f"/ui/teams/{world.team}", params={"as_of": moment})
            assert r.status_code == 422, (moment, r.status_code)


def _patient_of(world: PagesWorld) -> str:
    referral = world.views.queries.referral(Scope(everything=True), world.returned_referral)
    assert referral is not None
    patient: str = referral["patient_id"]
    return patient


def test_actions_need_the_form_token_and_show_broken_rules(world: PagesWorld) -> None:
    with signed_in(world, "hospital", **{"Accept-Language": "en"}) as http:
        page = http.get("/ui/worklists/hospital")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        forged = http.post(
            f"/ui/referrals/{world.pending_referral}/accept", data={"csrf": "x" * 43}
        )
        assert forged.status_code == 403
        # The first referral went back to the community long ago: accepting it breaks a rule.
        broken = http.post(
            f"/ui/referrals/{world.first_referral}/accept", data={"csrf": token.group(1)}
        )
        assert broken.status_code == 409
        assert "referral-step-out-of-order" in broken.text or "(referral-" in broken.text
        assert 'class="flash bad"' in broken.text
        bad_reason = http.post(
            f"/ui/referrals/{world.pending_referral}/reject",
            data={"csrf": token.group(1), "reason_code": "bored"},
        )
        assert bad_reason.status_code == 422
        assert "(invalid-value)" in bad_reason.text


def test_assets_ship_with_the_package(world: PagesWorld) -> None:
    with client(world) as http:
        assert http.get("/ui/static/ui.css").status_code == 200
        assert http.get("/ui/static/ui.js").status_code == 200
        page = http.get("/ui/sign-in")
        assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


def _form_token(http: httpx.Client, page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', http.get(page).text)
    assert found
    return found.group(1)


def test_pages_and_api_answer_each_kind_of_domain_error_alike(world: PagesWorld) -> None:
    """One mapping (``api.errors.domain_problem``): the same step, refused by the domain, gets
    the same status from the page as from the API, and the page names the API's code."""
    nowhere = uuid.uuid4()
    cases = [
        # (who, page worklist, step path, form, API body, status, API code, page shows code)
        ("hospital", "hospital", f"/referrals/{nowhere}/accept", {}, {}, 404, "not-found", True),
        (  # NotPermitted: another center's return reads as absent
            "other_center",
            "center",
            f"/referrals/{world.returned_referral}/acknowledge",
            {},
            {},
            404,
            "not-found",
            True,
        ),
        (  # a broken rule: the first referral went back to the community long ago
            "hospital",
            "hospital",
            f"/referrals/{world.first_referral}/accept",
            {},
            {},
            409,
            "referral-step-out-of-order",
            True,
        ),
        (  # an invalid value (the API's schema refuses it before the domain does)
            "hospital",
            "hospital",
            f"/referrals/{world.pending_referral}/reject",
            {"reason_code": "bored"},
            {"reason_code": "bored"},
            422,
            "validation-failed",
            False,
        ),
    ]
    for who, worklist, step, form, body, status, code, same_code in cases:
        api = httpx.post(world.url + step, json=body, headers=bearer(world.tokens[who]), timeout=30)
        assert (api.status_code, api.json()["code"]) == (status, code), (step, api.text)
        with signed_in(world, who, **{"Accept-Language": "en"}) as http:
            token = _form_token(http, f"/ui/worklists/{worklist}")
            page = http.post("/ui" + step, data={"csrf": token, **form})
        assert page.status_code == status, (step, page.status_code)
        assert page.headers["content-type"].startswith("text/html")
        assert 'class="flash bad"' in page.text
        if same_code:
            assert f"({code})" in page.text


def test_pages_and_api_answer_an_unreachable_database_alike(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, postgres_url=f"postgresql://jiayi@127.0.0.1:{free_port()}/jiayi"
    )
    served = Served(create_app(settings)).start()
    try:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            api = http.post("/patients/search", json={"q": "王秀"}, headers=bearer("jy_any_token"))
            http.cookies.set("jiayi_session", "jy_any_token")
            page = http.get("/ui/patients")
        assert api.status_code == page.status_code == 503
        assert api.json()["code"] == "service-unavailable"
        assert page.headers["content-type"].startswith("text/html")
        assert "(service-unavailable)" in page.text
        assert int(page.headers["retry-after"]) == int(api.headers["retry-after"]) > 0
    finally:
        served.stop()


def test_a_transfer_is_asked_for_and_released_on_the_pages(world: PagesWorld) -> None:
    """The new center names the resident on its worklist page; the patient's center sees the
    request on its own and releases it; only then does the patient move."""
    app, born = world.app, date(1971, 2, 3)
    nid = national_id(born, 404)
    center_admin, other_admin = Actor("nurse-1", world.center), Actor("desk", world.other_center)
    patient = app.register_patient(
        "孙丽华",
        sex="F",
        birth_date=born,
        national_id=nid,
        phone="13700000000",
        center_id=world.center,
        actor=center_admin,
    ).id
    app.sign_contract(
        patient, team_id=world.team, package="basic", start=app.now().date(), actor=center_admin
    )
    team = app.form_team(world.other_center, name="江宁团队", actor=other_admin).id
    app.add_team_member(
        team,
        staff_id="gp-jn",
        name="赵医生",
        role="general_practitioner",
        org_id=world.other_center,
        actor=other_admin,
    )
    assert world.views.queries.wait_for(app.max_position(), timeout=10)

    with signed_in(world, "other_center", **{"Accept-Language": "en"}) as http:
        page = http.get("/ui/worklists/center")
        assert 'id="request-transfer"' in page.text and "江宁团队" in page.text
        form = {
            "csrf": _form_token(http, "/ui/worklists/center"),
            "national_id": nid,
            "name": "孙丽华",
            "team_id": str(team),
            "consent": "转签同意书 77",
        }
        wrong = http.post("/ui/transfers", data={**form, "name": "孙丽"})
        assert wrong.status_code == 404  # not the resident named: as if unknown
        r = http.post("/ui/transfers", data=form)
        assert r.status_code == 303, r.text
        sent = http.get(r.headers["location"])
        assert "Transfer requested." in sent.text
        assert f'data-patient="{patient}"' in sent.text
        assert "孙丽华" not in sent.text  # nothing of the registry before the release
        assert http.get(f"/ui/patients/{patient}").status_code == 404

    with signed_in(world, "center", **{"Accept-Language": "en"}) as http:
        page = http.get("/ui/worklists/center")
        assert 'id="transfers-to-release"' in page.text and "转签同意书 77" in page.text
        token = _form_token(http, "/ui/worklists/center")
        r = http.post(f"/ui/patients/{patient}/transfer/release", data={"csrf": token})
        assert r.status_code == 303, r.text
        assert "Patient released" in http.get(r.headers["location"]).text
        assert http.get(f"/ui/patients/{patient}").status_code == 404

    with signed_in(world, "other_center") as http:
        assert http.get(f"/ui/patients/{patient}").status_code == 200


def test_auditors_verify_the_log_from_a_page(world: PagesWorld) -> None:
    """The page shows the last verification and starts one (with the form's CSRF token); other
    roles may not open it."""
    with signed_in(world, "center") as http:
        assert http.get("/ui/audit/verification").status_code == 403
    with signed_in(world, "auditor", **{"Accept-Language": "en"}) as http:
        page = http.get("/ui/audit/verification")
        assert page.status_code == 200 and "Log verification" in page.text
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        assert http.post("/ui/audit/verification", data={"limit": "5"}).status_code == 403
        r = http.post(
            "/ui/audit/verification", data={"csrf": token.group(1), "after": "0", "limit": "10"}
        )
        assert r.status_code == 303 and r.headers["location"].endswith("done=started")
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while "Every event is as recorded." not in (text := http.get(r.headers["location"]).text):
            assert datetime.now(UTC) < deadline, text
        assert re.search(r"positions 1–10\s*·\s*10 events", text), text
        bad = http.post(
            "/ui/audit/verification", data={"csrf": token.group(1), "limit": "10000001"}
        )
        assert bad.status_code == 422


def test_auditors_see_who_read_a_patient_on_a_page(world: PagesWorld) -> None:
    """Pages read through the same queries as the API: their reads are recorded alike. The
    auditor's page lists them, newest first, and records its own reading."""
    with signed_in(world, "other_center") as http:
        assert http.get(f"/ui/patients/{world.patient}").status_code == 404
        assert http.get("/ui/audit/access", params={"patient": str(world.patient)}).status_code == 403  # fmt: skip
    with signed_in(world, "center") as http:
        assert http.get(f"/ui/patients/{world.patient}").status_code == 200
        assert "王秀英" in search(http, "秀英").text
    world.views.queries.flush()
    with signed_in(world, "auditor", **{"Accept-Language": "en"}) as http:
        journey = http.get(f"/ui/patients/{world.patient}")
        assert f'href="/ui/audit/access?patient={world.patient}"' in journey.text
        world.views.queries.flush()
        page = http.get("/ui/audit/access", params={"patient": str(world.patient)})
        assert page.status_code == 200 and "Who read this patient" in page.text
        rows = re.findall(r'data-staff="([^"]*)" data-resource="([^"]*)"', page.text)
        assert ("nurse-1", "timeline") in rows and ("nurse-1", "search") in rows
        assert ("nurse-1", "registry") in rows and ("auditor-1", "timeline") in rows
        assert not any(staff == "desk" for staff, _ in rows)  # the 404 read nothing
        world.views.queries.flush()
        again = http.get("/ui/audit/access", params={"patient": str(world.patient)})
        newest = re.findall(r'data-staff="([^"]*)" data-resource="([^"]*)"', again.text)[:2]
        # the page read the log, then the patient's name for its title
        assert newest == [("auditor-1", "registry"), ("auditor-1", "access-log")]
        report = http.get("/ui/audit/access/report.csv", params={"patient": str(world.patient)})
        assert report.headers["content-type"].startswith("text/csv")
        assert report.text.startswith("at,staff_id,org_id,org_name,role,district,resource,rows")
        assert "nurse-1" in report.text and "access-log" in report.text
        assert http.get("/ui/audit/access", params={"patient": "nope"}).status_code == 404
        assert http.get("/ui/audit/access").status_code == 200  # the form alone


def _directives(policy: str) -> dict[str, str]:
    parts = (d.strip().partition(" ") for d in policy.split(";") if d.strip())
    return {name: value for name, _, value in parts}


def test_pages_carry_the_browsers_protections_and_are_never_cached(world: PagesWorld) -> None:
    """Every page (signed in or not, an error, a redirect) forbids framing, inline script and
    other origins, sends no referrer, and is not stored by any cache: they show patients."""
    with client(world) as anonymous:
        answers = [anonymous.get("/ui/sign-in"), anonymous.get(f"/ui/patients/{world.patient}")]
    with signed_in(world, "center") as http:
        answers += [
            http.get("/ui/patients"),
            search(http, "王秀"),
            http.get(f"/ui/patients/{world.patient}"),
            http.get(f"/ui/patients/{world.other_patient}"),  # 404
            http.get(f"/ui/teams/{world.team}"),
            http.get("/ui/worklists/center"),
        ]
    assert {r.status_code for r in answers} == {200, 303, 404}
    for r in answers:
        where = (r.request.url.path, r.status_code)
        policy = _directives(r.headers.get("content-security-policy", ""))
        assert policy.get("default-src") == "'self'", where
        assert policy.get("script-src") == "'self'", where  # no inline script, no eval
        assert policy.get("frame-ancestors") == "'none'", where
        assert policy.get("object-src") == "'none'" and policy.get("base-uri") == "'none'", where
        assert r.headers.get("x-frame-options") == "DENY", where
        assert r.headers.get("x-content-type-options") == "nosniff", where
        assert r.headers.get("referrer-policy") == "no-referrer", where
        assert r.headers.get("cache-control") == "no-store", where
        # nothing on the page that the policy would block
        assert not re.search(r"<script(?![^>]*\ssrc=)", r.text), where
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", r.text), where
        assert not re.search(r"<style", r.text), where
    # the API's answers about patients are not cached either
    api = httpx.get(
        f"{world.url}/patients/{world.patient}", headers=bearer(world.tokens["center"]), timeout=30
    )
    assert api.status_code == 200 and api.headers.get("cache-control") == "no-store"
    assert api.headers.get("x-content-type-options") == "nosniff"

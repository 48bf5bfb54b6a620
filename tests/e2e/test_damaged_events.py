"""A damaged stored event met through the API and the pages: 500 ``damaged-event`` with a fixed
detail (no ids, no content), and a log line at error level naming where the event is."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import httpx
import pytest

from jiayi.settings import Settings
from tests.damage import Damage, damage
from tests.e2e.server import HttpWorld, bearer

DETAIL = "A stored record failed its integrity check; the operators have been told."


def assert_logged(caplog: pytest.LogCaptureFixture, done: Damage) -> None:
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    named = [
        line
        for line in lines
        if f"position {done.position}," in line
        and f"aggregate {done.aggregate} version {done.version}" in line
        and f"topic {done.topic}" in line
    ]
    assert named, lines
    assert "does not match its digest" in named[0]


def test_a_damaged_event_answers_500_without_data_and_is_logged_with_its_place(
    world: HttpWorld, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    patient, _ = world.contracted()
    referral = world.referral(patient)
    world.ok(f"/referrals/{referral}/accept", world.hospital.token)
    done = damage(settings, referral, 2)  # its Referral.Accepted, changed in place
    national_id, name = world.identities[patient]
    secrets = [str(referral), referral.hex, str(patient), patient.hex, national_id, name]
    caplog.set_level(logging.ERROR, logger="jiayi.api")

    r = world.post(f"/referrals/{referral}/arrival", world.hospital.token)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (r.json()["code"], r.json()["detail"]) == ("damaged-event", DETAIL)
    assert not [s for s in secrets if s in r.text]
    assert_logged(caplog, done)

    # a read that meets it: the views as of a moment are replayed from the log
    caplog.clear()
    moment = datetime.now(UTC).isoformat()
    r = world.http.get(
        f"/patients/{patient}/timeline", params={"as_of": moment}, headers=bearer(world.auditor)
    )
    assert (r.status_code, r.json()["code"]) == (500, "damaged-event")
    assert not [s for s in secrets if s in r.text]
    assert_logged(caplog, done)

    # the pages answer the same, as HTML
    caplog.clear()
    with httpx.Client(base_url=world.served.url, timeout=30) as http:
        form = http.get("/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        signed = http.post(
            "/ui/sign-in", data={"csrf": token.group(1), "token": world.hospital.token}
        )
        assert signed.status_code == 303
        worklist = http.get("/ui/worklists/hospital", headers={"Accept-Language": "en"})
        token = re.search(r'name="csrf" value="([^"]+)"', worklist.text)
        assert token
        page = http.post(
            f"/ui/referrals/{referral}/accept",
            data={"csrf": token.group(1)},
            headers={"Accept-Language": "en"},
        )
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "(damaged-event)" in page.text and DETAIL in page.text
    # (the page's own address, in its language links, names the referral the form posted to)
    assert not [s for s in secrets[2:] if s in page.text]
    assert_logged(caplog, done)

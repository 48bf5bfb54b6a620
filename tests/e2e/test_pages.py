"""The web pages in headless Chromium (Debian's ``chromium``, driven by Playwright): a center
nurse finds 王秀英 and reads her journey; the hospital accepts her pending referral from its
worklist; the nurse's journey shows the change. Screenshots go to ``test-artifacts/``.

Runs on SQLite and on PostgreSQL (the ``settings`` fixture). Without Chromium the test skips,
or fails under ``CI=true``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jiayi.settings import Settings
from tests.conftest import IN_CI
from tests.e2e.pages_world import PagesWorld, serve_world

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("JIAYI_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAPTOP = {"width": 1366, "height": 768}

FIRST_REFERRAL_STEPS = [
    "referral.requested",
    "referral.accepted",
    "booking.booked",
    "referral.arrived",
    "booking.attended",
    "referral.admitted",
    "return.returned",
    "return.acknowledged",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"no Chromium at {CHROMIUM} (run infra/browser/ensure.sh)"
        if IN_CI:
            pytest.fail(f"headless Chromium is required under CI=true: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield found
        found.close()


@pytest.fixture
def world(settings: Settings) -> Iterator[PagesWorld]:
    w = serve_world(settings)
    yield w
    w.stop()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, world: PagesWorld, who: str) -> None:
    page.goto(f"{world.url}/ui")
    assert "/ui/sign-in" in page.url
    page.fill("#token", world.tokens[who])
    page.click("form[action='/ui/sign-in'] button[type=submit]")
    page.wait_for_load_state()
    assert "/ui/sign-in" not in page.url


def watched(context: Any, refused: list[str]) -> Any:
    """A page of ``context`` whose Content-Security-Policy refusals are collected in
    ``refused`` (the pages must work under their own policy)."""
    page = context.new_page()
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return page


def step_kinds(page: Any, referral: object) -> list[str]:
    kinds: list[str] = page.locator(f"#r-{referral} ol.steps li").evaluate_all(
        "items => items.map(li => li.dataset.kind)"
    )
    return kinds


def test_journey_and_hospital_acceptance(
    browser: Any, world: PagesWorld, settings: Settings
) -> None:
    store = "postgres" if settings.uses_postgres else "sqlite"
    refused: list[str] = []
    nurse = watched(browser.new_context(viewport=LAPTOP, locale="zh-CN"), refused)
    sign_in(nurse, world, "center")

    # Find the patient by part of her name, open her journey.
    nurse.goto(f"{world.url}/ui/patients")
    nurse.fill("input[name=q]", "秀英")
    nurse.press("input[name=q]", "Enter")
    nurse.wait_for_selector("#results")
    assert nurse.locator("#results a.patient").all_inner_texts() == ["王秀英"]
    nurse.click("#results a.patient")
    nurse.wait_for_selector("svg.journey")
    assert nurse.locator("h1").inner_text().startswith("王秀英")

    # Two lanes (the center, the hospital); the first referral's steps in the order they happened.
    lanes = nurse.locator("svg.journey text.lane-name").all_text_contents()
    assert lanes == ["鼓楼社区卫生服务中心", "鼓楼医院"]
    assert step_kinds(nurse, world.first_referral) == FIRST_REFERRAL_STEPS
    assert step_kinds(nurse, world.pending_referral) == ["referral.requested"]
    pending = nurse.locator(f"#r-{world.pending_referral}")
    assert pending.get_attribute("data-status") == "requested"
    assert "绿色通道" in pending.inner_text()  # registered poor: green channel stands out
    assert nurse.locator(f"#r-{world.pending_referral}.green").count() == 1

    # Clicking an item on the chart opens its details: what, who, where.
    mark = nurse.locator("svg.journey a.mark.k-referral-accepted").first
    target = mark.get_attribute("data-target")
    mark.click()
    details = nurse.locator(f"{target} details")
    assert details.get_attribute("open") is not None
    assert "cardio-desk" in details.inner_text()
    shot(nurse, f"journey-before-{store}")

    # The hospital accepts the pending referral from its worklist (in English).
    desk = watched(browser.new_context(viewport=LAPTOP, locale="en-US"), refused)
    sign_in(desk, world, "hospital")
    assert "/ui/worklists/hospital" in desk.url
    row = desk.locator(f"tr[data-referral='{world.pending_referral}']")
    assert "green channel" in row.inner_text()
    shot(desk, f"hospital-worklist-{store}")
    row.locator("button.accept").click()
    desk.wait_for_load_state()
    assert desk.locator(".flash.ok").inner_text() == "Referral accepted."
    assert desk.locator(f"tr[data-referral='{world.pending_referral}']").count() == 0

    # The nurse's journey shows the change.
    nurse.reload()
    nurse.wait_for_selector("svg.journey")
    assert step_kinds(nurse, world.pending_referral) == [
        "referral.requested",
        "referral.accepted",
    ]
    assert nurse.locator(f"#r-{world.pending_referral}").get_attribute("data-status") == "accepted"
    text = nurse.locator(f"#r-{world.pending_referral} ol.steps").inner_text()
    assert re.search(r"医院接收.*cardio-desk @ 鼓楼医院", text, re.S)
    shot(nurse, f"journey-after-{store}")

    # The team's workload, as a coordinator sees it.
    coordinator = watched(browser.new_context(viewport=LAPTOP, locale="zh-CN"), refused)
    sign_in(coordinator, world, "coordinator")
    coordinator.goto(f"{world.url}/ui/teams/{world.team}")
    assert coordinator.locator("#chart-follow-ups .hrow").count() == 3  # team + two members
    shot(coordinator, f"team-workload-{store}")
    assert refused == []  # nothing on the pages was blocked by their security policy

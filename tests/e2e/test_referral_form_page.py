"""The two-way referral form (双向转诊单) in headless Chromium: the hospital reads the form from
its worklist before deciding (diagnoses inline, overdue decisions marked), opens the form page,
and prints it (print media: A4 sheets, no navigation). A center with no relation to the patient
finds nothing. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.common import Actor
from jiayi.settings import Settings
from tests.e2e.pages_world import PagesWorld
from tests.e2e.test_pages import LAPTOP, browser, shot, sign_in, watched, world

__all__ = ["browser", "world"]  # the fixtures of the page tests


def full_form_referral(world: PagesWorld) -> str:
    """A referral up with the whole form, accepted, and returned with the return form."""
    app, now = world.app, datetime.now(UTC)
    gp, cardio = Actor("gp-1", world.center), Actor("cardio-desk", world.hospital)
    rid = app.request_referral(
        world.patient,
        hospital_id=world.hospital,
        department="cardiology",
        reason="头晕、血压波动一周，社区调整用药后仍控制不佳",
        diagnoses=[
            {"code": "I10", "text": "原发性高血压"},
            {"code": "E11.9", "text": "2型糖尿病"},
        ],
        past_history="高血压10年，2型糖尿病5年",
        treatment="氨氯地平 5mg qd，二甲双胍 0.5g bid",
        referring_doctor="李医生",
        doctor_phone="025-83262000",
        urgency="routine",
        actor=gp,
        at=now - timedelta(days=6),
    ).id
    app.accept_referral(rid, actor=cardio, at=now - timedelta(days=5.9))
    app.record_arrival(rid, actor=cardio, at=now - timedelta(days=5))
    app.return_to_community(
        rid,
        summary="调整降压方案后血压平稳",
        prescriptions=[{"drug": "缬沙坦", "dose": "80mg", "frequency": "qd"}],
        rehabilitation="低盐饮食，每日监测血压",
        follow_up_due=(now + timedelta(days=7)).date(),
        actor=cardio,
        at=now - timedelta(days=1),
        diagnoses=[{"code": "I10", "text": "原发性高血压2级"}],
        inpatient_number="ZY2026-001234",
        key_results="24h动态血压均值 132/84 mmHg",
        next_plan="4周后心内科复诊",
    )
    assert world.views.queries.wait_for(app.max_position(), timeout=30)
    return str(rid)


def texts(page: Any, selector: str) -> list[str]:
    found: list[str] = page.locator(selector).all_inner_texts()
    return found


def test_the_hospital_reads_and_prints_the_form(
    browser: Any, world: PagesWorld, settings: Settings
) -> None:
    store = "postgres" if settings.uses_postgres else "sqlite"
    rid = full_form_referral(world)
    refused: list[str] = []
    desk = watched(browser.new_context(viewport=LAPTOP, locale="zh-CN"), refused)
    sign_in(desk, world, "hospital")

    # The worklist: the pending referral (green channel, asked yesterday: due the same day)
    # shows its diagnosis and stands out as overdue, with a link to its form.
    desk.goto(f"{world.url}/ui/worklists/hospital")
    row = desk.locator(f"tr[data-referral='{world.pending_referral}']")
    assert "R07.4" in row.locator("td.diagnoses").inner_text()
    assert row.get_attribute("class") is not None
    assert "overdue" in (row.get_attribute("class") or "")
    assert "决定逾期" in row.locator("td.deadline").inner_text()
    row.locator("a.form-link").click()
    desk.wait_for_selector("#transfer")
    assert desk.url.endswith(f"/ui/referrals/{world.pending_referral}/form")
    assert "胸痛待查" in desk.locator("#transfer .f-reason").inner_text()

    # The whole form of a returned referral: stub, transfer form, return form.
    desk.goto(f"{world.url}/ui/referrals/{rid}/form")
    desk.wait_for_selector("#return")
    transfer = desk.locator("#transfer")
    assert texts(desk, "#transfer .f-diagnoses .dx") == ["I10 原发性高血压", "E11.9 2型糖尿病"]
    assert "头晕" in transfer.locator(".f-reason").inner_text()
    assert transfer.locator(".f-past").inner_text() == "高血压10年，2型糖尿病5年"
    assert transfer.locator(".f-treatment").inner_text() == "氨氯地平 5mg qd，二甲双胍 0.5g bid"
    assert transfer.locator(".f-doctor").inner_text() == "李医生"
    assert transfer.locator(".f-phone").inner_text() == "025-83262000"
    assert transfer.locator(".f-name").inner_text() == "王秀英"
    back = desk.locator("#return")
    assert texts(desk, "#return .f-diagnoses .dx") == ["I10 原发性高血压2级"]
    assert back.locator(".f-inpatient").inner_text() == "ZY2026-001234"
    assert back.locator(".f-results").inner_text() == "24h动态血压均值 132/84 mmHg"
    assert back.locator(".f-next").inner_text() == "4周后心内科复诊"
    assert back.locator(".f-rehab").inner_text() == "低盐饮食，每日监测血压"
    assert "缬沙坦" in back.inner_text()
    assert desk.locator("#stub").count() == 1
    shot(desk, f"referral-form-screen-{store}")

    # Printed: no navigation or buttons, each sheet on a page of its own.
    desk.emulate_media(media="print")
    assert desk.locator("header.top").is_hidden()
    assert desk.locator("#print-form").is_hidden()
    assert transfer.is_visible() and back.is_visible()
    breaks = desk.locator("section.sheet").evaluate_all(
        "s => s.map(e => getComputedStyle(e).breakAfter)"
    )
    assert breaks == ["page", "page", "auto"]
    shot(desk, f"referral-form-print-{store}")
    assert refused == []

    # A center with no relation to the patient: the same 404 page as an id that does not exist.
    other = watched(browser.new_context(viewport=LAPTOP, locale="zh-CN"), refused)
    sign_in(other, world, "other_center")
    answer = other.goto(f"{world.url}/ui/referrals/{rid}/form")
    assert answer is not None and answer.status == 404
    foreign = other.locator("main").inner_text()
    assert "王秀英" not in foreign and "原发性高血压" not in foreign
    missing = other.goto(f"{world.url}/ui/referrals/{'0' * 32}/form")
    assert missing is not None and missing.status == 404
    assert other.locator("main").inner_text() == foreign

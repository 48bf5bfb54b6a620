"""Which language a page gets, and that every label exists in both languages."""

from __future__ import annotations

from api.web.i18n import LABELS, Labels, pick


def test_parameter_then_cookie_then_browser_then_setting() -> None:
    assert pick("en", "zh", "zh-CN", "zh") == "en"
    assert pick(None, "en", "zh-CN", "zh") == "en"
    assert pick("klingon", None, "fr;q=0.9, en-GB;q=0.8, zh;q=0.1", "zh") == "en"
    assert pick(None, None, "zh-TW,zh;q=0.9", "en") == "zh"
    assert pick(None, None, "fr", "en") == "en"
    assert pick(None, None, None, "xx") == "zh"


def test_labels_in_both_languages() -> None:
    assert all(en and zh for en, zh in LABELS.values())
    assert Labels("zh")("sign_in") == "登录"
    assert Labels("en").kind("referral.accepted") == "accepted by hospital"
    assert Labels("en")("no-such-label") == "no-such-label"

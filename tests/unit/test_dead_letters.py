"""Dead letters always fit and never block (issue 15), without a broker: what a dead letter
holds, and what :class:`DeadLetters` does when the broker refuses one (a fake producer)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from consumers.deadletter import (
    HEADER_VALUE_LIMIT,
    ORIGINAL_HEADERS_LIMIT,
    TRUNCATED_VALUE,
    DeadLetters,
    Failure,
    capped,
    dead_letter,
    record_size,
)
from consumers.messages import MessageRejected, control_character, decode

FAILURE = Failure("schema-violation", "data/note: " + "体" * 10_000, "x.MessageRejected")


def record(
    value: bytes | None, key: bytes | None = b"k", headers: Any = (), offset: int = 7
) -> ConsumerRecord:
    return ConsumerRecord("t.in", 2, None, offset, 0, 0, key, value, list(headers), None, 0, 0, 0)


def test_a_dead_letter_never_repeats_an_unbounded_value() -> None:
    partner = [(f"h{i}", b"v" * 1000) for i in range(20)]  # 20 KB of the partner's headers
    small = record(b"{}", headers=partner)
    letter = dead_letter(small, FAILURE, 256 * 1024)
    own = [(k, v) for k, v in letter.headers if not k.startswith(("__connect", "jiayi"))]
    assert sum(len(k) + len(v) for k, v in own) <= ORIGINAL_HEADERS_LIMIT
    added = dict(letter.headers)
    assert added["jiayi.error.headers-dropped"] == str(len(partner) - len(own)).encode()
    assert all(len(v) <= HEADER_VALUE_LIMIT for k, v in letter.headers if k not in dict(own))
    message = added["__connect.errors.exception.message"].decode()  # cut at a character
    assert message.endswith("…") and message.startswith("data/note: 体")
    assert letter.value == b"{}"


def test_an_oversized_message_is_copied_truncated_with_where_it_is() -> None:
    big = record(b"x" * 600_000, key=b"p" * 1000)
    assert record_size(big) == 601_000
    letter = dead_letter(big, FAILURE, 256 * 1024)
    headers = dict(letter.headers)
    assert letter.value == b"x" * TRUNCATED_VALUE
    assert letter.key is not None and len(letter.key) <= 256
    assert headers["jiayi.error.truncated"] == b"601000"
    where = [headers[f"__connect.errors.{k}"] for k in ("topic", "partition", "offset")]
    assert where == [b"t.in", b"2", b"7"]


def test_capped_cuts_at_a_character() -> None:
    assert capped("abc", 10) == b"abc"
    cut = capped("体" * 10, 10)
    assert len(cut) <= 10 and cut.decode() == "体" * 2 + "…"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"data": {"note": "a\\u0000b"}}', "data/note: control character U+0000 at character 1"),
        ('{"id": "x\\u001e"}', "id: control character U+001E at character 1"),
        ('{"data": {"m": ["ok", "\\u001f"]}}', "data/m/1: control character U+001F at character 0"),
        ('{"data": {"note": "a\x7f"}}', "data/note: control character U+007F at character 1"),
        ('{"data": {"note": "\u0085"}}', "data/note: control character U+0085 at character 0"),
        ('{"data": {"n\\u0000": 1}}', "data: control character U+0000 in the name of a field"),
        ('{"data": {"note": "\\b"}}', "data/note: control character U+0008 at character 0"),
    ],
)
def test_a_control_character_anywhere_is_refused_naming_its_field(text: str, where: str) -> None:
    assert control_character(json.loads(text)) == where
    with pytest.raises(MessageRejected) as refused:
        decode(text.encode(), date(2026, 6, 1))
    assert (refused.value.code, refused.value.message) == ("control-character", where)


def test_a_document_nested_a_thousand_deep_is_refused_not_a_crash() -> None:
    """A hostile partner nests arrays as deep as the JSON parser allows around a NUL: the
    message is dead-lettered like any other (a recursive walk hit Python's recursion limit,
    and the consumer went back to the same message for ever)."""
    text = '{"data": {"note": ' + "[" * 1000 + '"\\u0000"' + "]" * 1000 + "}}"
    with pytest.raises(MessageRejected) as refused:
        decode(text.encode(), date(2026, 6, 1))
    assert refused.value.code == "control-character"
    assert refused.value.message.startswith("data/note/0/0/0/")


def test_lines_and_tabs_are_text() -> None:
    assert control_character({"note": "a\nb\tc\r\n", "x": ["\\u0000 literally"]}) is None


class FakeProducer:
    """Takes what ``accept`` says: an exception to fail with, or None (acknowledged)."""

    def __init__(self, outcomes: list[KafkaError | None], refuse_notices: bool = False) -> None:
        self.outcomes = outcomes
        self.refuse_notices = refuse_notices
        self.sent: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        self.closed = False

    def send(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> Any:
        self.sent.append((key, value, dict(headers)))
        notice = "jiayi.error.dead-letter-refused" in dict(headers)
        error = self.outcomes.pop(0) if not notice and self.outcomes else None
        if notice and self.refuse_notices:
            error = TopicAuthorizationFailedError()
        return Done(error)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class Done:
    def __init__(self, error: KafkaError | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


def letters(
    *outcomes: KafkaError | None, refuse_notices: bool = False
) -> tuple[DeadLetters, list[FakeProducer]]:
    made: list[FakeProducer] = []
    pending = list(outcomes)

    def producer() -> Any:
        made.append(FakeProducer(pending, refuse_notices))
        return made[-1]

    return DeadLetters(producer, "dead", 256 * 1024, backoff=0.0), made


def test_a_refused_dead_letter_is_not_asked_again_and_a_notice_stands_in() -> None:
    dead, made = letters(MessageSizeTooLargeError())
    dead.send([(record(b"secret note"), FAILURE)])
    sent = [s for p in made for s in p.sent]
    assert len(sent) == 2  # the letter once, then its notice
    key, value, headers = sent[1]
    assert key is None and b"secret" not in (value or b"")
    assert json.loads(value or b"") == {
        "topic": "t.in",
        "partition": 2,
        "offset": 7,
        "code": "schema-violation",
    }
    assert headers["jiayi.error.dead-letter-refused"] == b"MessageSizeTooLargeError"
    assert (dead.noticed, dead.logged) == (1, 0)


def test_a_transient_failure_is_tried_again_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead, made = letters(*[KafkaTimeoutError()] * 10, refuse_notices=True)
    dead.send([(record(b"secret note"), FAILURE)])  # returns: never raises, never loops
    letters_sent = [s for p in made for s in p.sent if "jiayi.error.code" in s[2]]
    assert len(letters_sent) == 4 + 1  # four attempts, then the notice
    assert (dead.noticed, dead.logged) == (0, 1)
    [line] = [r.getMessage() for r in caplog.records]
    assert "t.in:2@7 (schema-violation)" in line and "secret" not in line


def test_a_transient_failure_then_success_sends_the_letter_once_more_only() -> None:
    dead, made = letters(KafkaTimeoutError(), None)
    dead.send([(record(b"v"), FAILURE)])
    assert [s[1] for p in made for s in p.sent] == [b"v", b"v"]
    assert (dead.noticed, dead.logged) == (0, 0)
    assert made[0].closed  # a producer that failed is replaced

"""Dead letters: the original key, value and headers, plus headers giving the reason.

Header names follow Kafka Connect's (``__connect.errors.*``) so existing tooling reads them;
``jiayi.error.code`` is the stable machine-readable reason (``message-too-large``,
``malformed-message``, ``control-character``, ``missing-key``, ``key-mismatch``,
``unknown-type``, ``unsupported-version``, ``schema-violation``, ``unknown-source``,
``source-mismatch``, ``not-found`` for anything absent or not the sender's to act on (one
fixed message for both), ``damaged-aggregate`` (a stored event it touches is damaged), or a
domain error's code): :func:`dead_letter_codes` lists them all
with their meaning, as ``asyncapi.yaml`` does.

A dead letter always fits what the broker takes: a message larger than the maximum accepted
size (:attr:`jiayi.settings.Settings.kafka_max_message_bytes`) is copied truncated (its first
:data:`TRUNCATED_VALUE` bytes; the headers name where the original is), each reason header is
cut to :data:`HEADER_VALUE_LIMIT` bytes and the original's own headers to
:data:`ORIGINAL_HEADERS_LIMIT` in all. A dead letter the broker still refuses, or cannot take
within a few attempts, never blocks the partition: a small notice (topic, partition, offset,
code; no key, no value) goes in its place, and when even that fails one log line (the same
four, no payload) does; the consumer goes on either way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

log = logging.getLogger(__name__)

#: Seconds one attempt waits for the broker to acknowledge a batch's dead letters.
ATTEMPT_TIMEOUT = 10.0
#: Attempts at producing the dead letters while the broker answers with a transient error
#: (a timeout, a leader moving), with :data:`BACKOFF` seconds before the second, doubling.
ATTEMPTS = 4
BACKOFF = 0.5
#: A reason header's value at most (bytes): longer ones are cut at a character and end in "…".
HEADER_VALUE_LIMIT = 1024
#: The original message's own headers kept in its dead letter, at most (bytes of names and
#: values, in their order); the rest are left out and counted (``jiayi.error.headers-dropped``).
ORIGINAL_HEADERS_LIMIT = 8 * 1024
#: Bytes of the value of a message over the maximum size kept in its dead letter (and of its
#: key).
TRUNCATED_VALUE = 4 * 1024
TRUNCATED_KEY = 256
#: What a dead letter adds, at most, to a message within the maximum size (reason headers, the
#: original's headers as kept): the dead-letter producer's request limit is the maximum message
#: size plus this.
DEAD_LETTER_OVERHEAD = 16 * 1024

#: The consumer's own ``jiayi.error.code`` values and what each means.
CONSUMER_CODES = {
    "message-too-large": (
        "key, value and headers together exceed the maximum message size"
        " (JIAYI_KAFKA_MAX_MESSAGE_BYTES, 256 KiB by default); nothing of it was parsed. The dead"
        " letter holds only the first 4 KiB of the value (jiayi.error.truncated: the original"
        " size); the original stays at __connect.errors.topic/partition/offset"
    ),
    "malformed-message": "the value is not a JSON object",
    "control-character": (
        "a text of the message (a value or a name) holds a control character (C0 other than tab,"
        " line feed and carriage return, DEL, C1); the message names the field and the character"
    ),
    "missing-key": "the message has no key (the key is the patient id)",
    "key-mismatch": (
        "the key is not a patient id (a UUID), or not the patient the data names (patient_id)"
    ),
    "unknown-type": "the type is no partner message type (or has no version)",
    "unsupported-version": (
        "a version never accepted, or one past its sunset; the message names the current version"
    ),
    "schema-violation": "the CloudEvent or its data breaks the type's schema (a pointer says where)",
    "unknown-source": "the source names no registered organisation",
    "source-mismatch": "the source is not the organisation whose inbound topic carried it",
    "not-found": (
        "what the message names is absent or not the sender's to act on (one message for both)"
    ),
    "invalid-value": "a value the domain does not accept (also an unknown v1 measurement)",
    "domain-rule-broken": "a domain rule broken that has no code of its own",
    "damaged-aggregate": (
        "a stored event of an aggregate the message touches failed its integrity check (the"
        " message names its position, aggregate, version and topic, never its content); nothing"
        " of the message was applied"
    ),
}


def dead_letter_codes() -> dict[str, str]:
    """Every ``jiayi.error.code`` a dead letter may carry and its meaning: the consumer's own,
    then each domain error's code (but those answered as ``not-found``) with its docstring."""
    import domain.application  # noqa: F401  (every aggregate's errors are defined)
    from domain.common import DomainError

    codes = dict(CONSUMER_CODES)
    pending: list[type[DomainError]] = list(DomainError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending += cls.__subclasses__()
        if cls.not_found or cls.forbidden:
            continue
        doc = " ".join((cls.__doc__ or "").split())
        codes.setdefault(cls.code, doc)
    return codes


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    exception: str
    #: (source, id) of a valid message that failed a rule: it may have been applied before.
    key: tuple[str, str] | None = None


Headers = list[tuple[str, bytes]]


def record_size(record: ConsumerRecord) -> int:
    """What a message weighs against the maximum size: its key, value and headers (names and
    values), in bytes."""
    size = len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers or ():
        size += len(name.encode()) + len(value or b"")
    return size


def capped(text: str, limit: int = HEADER_VALUE_LIMIT) -> bytes:
    """``text`` in UTF-8, at most ``limit`` bytes: a longer one is cut at a character boundary
    and ends in "…"."""
    data = text.encode()
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode(errors="ignore").encode() + "…".encode()


def reason_headers(record: ConsumerRecord, failure: Failure) -> Headers:
    return [
        ("__connect.errors.topic", record.topic.encode()),
        ("__connect.errors.partition", str(record.partition).encode()),
        ("__connect.errors.offset", str(record.offset).encode()),
        ("__connect.errors.exception.class.name", capped(failure.exception)),
        ("__connect.errors.exception.message", capped(failure.message)),
        ("jiayi.error.code", capped(failure.code)),
    ]


def kept_headers(record: ConsumerRecord) -> Headers:
    """The original's own headers, in order, up to :data:`ORIGINAL_HEADERS_LIMIT` bytes; how
    many were left out, if any, in ``jiayi.error.headers-dropped``."""
    kept: Headers = []
    room, dropped = ORIGINAL_HEADERS_LIMIT, 0
    for name, value in record.headers or ():
        size = len(name.encode()) + len(value or b"")
        if size > room:
            dropped += 1
            continue
        room -= size
        kept.append((name, value or b""))
    if dropped:
        kept.append(("jiayi.error.headers-dropped", str(dropped).encode()))
    return kept


@dataclass(frozen=True)
class Letter:
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter(record: ConsumerRecord, failure: Failure, max_message_bytes: int) -> Letter:
    """The dead letter of ``record``: its key, value and headers as they came, with the reason
    headers added; for a message over ``max_message_bytes``, the first :data:`TRUNCATED_VALUE`
    bytes of its value (and :data:`TRUNCATED_KEY` of its key) and ``jiayi.error.truncated``, the
    original size (the original is at the topic, partition and offset the headers name)."""
    headers = kept_headers(record) + reason_headers(record, failure)
    size = record_size(record)
    if size <= max_message_bytes:
        return Letter(record.key, record.value, headers)
    headers.append(("jiayi.error.truncated", str(size).encode()))
    key = record.key[:TRUNCATED_KEY] if record.key is not None else None
    value = record.value[:TRUNCATED_VALUE] if record.value is not None else None
    return Letter(key, value, headers)


def notice(record: ConsumerRecord, failure: Failure, error: BaseException) -> Letter:
    """What stands for a dead letter the broker would not take: where the message is and why
    it was refused, nothing of its content (no key, no value but those four)."""
    where = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "code": failure.code,
    }
    headers = [
        ("__connect.errors.topic", record.topic.encode()),
        ("__connect.errors.partition", str(record.partition).encode()),
        ("__connect.errors.offset", str(record.offset).encode()),
        ("jiayi.error.code", capped(failure.code)),
        ("jiayi.error.dead-letter-refused", capped(type(error).__name__)),
    ]
    return Letter(None, orjson.dumps(where), headers)


def _transient(error: BaseException) -> bool:
    return bool(getattr(error, "retriable", False))


class DeadLetters:
    """Sends failed messages to the dead-letter topic and waits for the broker's acks.

    :meth:`send` returns once every dead letter was acknowledged, or stood in for by a notice,
    or logged: it never raises, so no message blocks its partition (the caller then records the
    partition's next offset, once, in the batch's transaction)."""

    def __init__(
        self,
        producers: Callable[[], KafkaProducer],
        topic: str,
        max_message_bytes: int,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        timeout: float = ATTEMPT_TIMEOUT,
    ) -> None:
        self.producers = producers
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._producer: KafkaProducer | None = None
        #: Dead letters the broker refused, replaced by a notice / only logged (counts).
        self.noticed = 0
        self.logged = 0

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self.producers()
        return self._producer

    def drop_producer(self) -> None:
        """After a failure: a new producer for the next attempt (what this one still buffers is
        dropped: a dead letter may then arrive twice, never not at all)."""
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:  # closing a broken producer is best effort
                log.debug("closing the dead-letter producer failed", exc_info=True)
            self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def send(self, failed: Sequence[tuple[ConsumerRecord, Failure]]) -> None:
        if not failed:
            return
        pending = [(r, f, dead_letter(r, f, self.max_message_bytes)) for r, f in failed]
        errors: list[BaseException] = []
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            results = self._produce([letter for _, _, letter in pending])
            errors = [e for e in results if e is not None]
            pending = [p for p, e in zip(pending, results, strict=True) if e is not None]
            if not pending:
                return
            self.drop_producer()
            if not any(_transient(e) for e in errors):
                break  # the broker refused them: asking again changes nothing
        notices = [notice(r, f, e) for (r, f, _), e in zip(pending, errors, strict=True)]
        results = self._produce(notices)
        for (record, failure, _), refused, error in zip(pending, errors, results, strict=True):
            if error is None:
                self.noticed += 1
                log.error(
                    "dead letter of %s:%d@%d (%s) refused (%s): a notice stands in for it",
                    record.topic,
                    record.partition,
                    record.offset,
                    failure.code,
                    type(refused).__name__,
                )
            else:
                self.logged += 1
                log.error(
                    "dead letter of %s:%d@%d (%s) refused (%s), and its notice (%s): the message"
                    " stays only at that offset",
                    record.topic,
                    record.partition,
                    record.offset,
                    failure.code,
                    type(refused).__name__,
                    type(error).__name__,
                )
        if any(e is not None for e in results):
            self.drop_producer()

    def _produce(self, letters: Sequence[Letter]) -> list[BaseException | None]:
        """Send ``letters`` and wait (at most :attr:`timeout` seconds in all) for the broker:
        per letter, None when acknowledged, else what failed."""
        deadline = time.monotonic() + self.timeout
        try:
            producer = self.producer
        except KafkaError as exc:  # no broker to connect to
            return [exc for _ in letters]
        sent: list[Any] = []
        for letter in letters:
            try:
                sent.append(
                    producer.send(
                        self.topic, value=letter.value, key=letter.key, headers=letter.headers
                    )
                )
            except (KafkaError, ValueError, TypeError) as exc:  # refused before sending
                sent.append(exc)
        with contextlib.suppress(KafkaError):  # the futures below say which failed
            producer.flush(timeout=max(0.0, deadline - time.monotonic()))
        results: list[BaseException | None] = []
        for future in sent:
            if isinstance(future, BaseException):
                results.append(future)
                continue
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
                results.append(None)
            except KafkaError as exc:
                results.append(exc)
        return results

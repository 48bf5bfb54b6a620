"""Dead letters: the original key, value and headers, plus headers giving the reason.

Header names follow Kafka Connect's (``__connect.errors.*``) so existing tooling reads them;
``jiayi.error.code`` is the stable machine-readable reason (``malformed-message``,
``unknown-type``, ``unsupported-version``, ``schema-violation``, ``unknown-source``,
``source-mismatch``, ``not-found`` for anything absent or not the sender's to act on (one
fixed message for both), ``damaged-aggregate`` (a stored event it touches is damaged), or a
domain error's code): :func:`dead_letter_codes` lists them all
with their meaning, as ``asyncapi.yaml`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

SEND_TIMEOUT = 60.0

#: The consumer's own ``jiayi.error.code`` values and what each means.
CONSUMER_CODES = {
    "malformed-message": "the value is not a JSON object",
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


def reason_headers(record: ConsumerRecord, failure: Failure) -> list[tuple[str, bytes]]:
    return [
        ("__connect.errors.topic", record.topic.encode()),
        ("__connect.errors.partition", str(record.partition).encode()),
        ("__connect.errors.offset", str(record.offset).encode()),
        ("__connect.errors.exception.class.name", failure.exception.encode()),
        ("__connect.errors.exception.message", failure.message.encode()),
        ("jiayi.error.code", failure.code.encode()),
    ]


class DeadLetters:
    """Sends failed messages to the dead-letter topic and waits for the broker's acks."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def send(self, failed: Sequence[tuple[ConsumerRecord, Failure]]) -> None:
        futures = [
            self.producer.send(
                self.topic,
                value=record.value,
                key=record.key,
                headers=list(record.headers or []) + reason_headers(record, failure),
            )
            for record, failure in failed
        ]
        if futures:
            self.producer.flush(timeout=SEND_TIMEOUT)
            for f in futures:
                f.get(timeout=SEND_TIMEOUT)  # raises if the broker did not take it

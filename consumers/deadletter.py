"""Dead letters: the original key, value and headers, plus headers giving the reason.

Header names follow Kafka Connect's (``__connect.errors.*``) so existing tooling reads them;
``jiayi.error.code`` is the stable machine-readable reason (``malformed-message``,
``unknown-type``, ``unsupported-version``, ``schema-violation``, ``unknown-source``,
``not-found`` for anything absent or not the sender's to act on (one fixed message for both),
or a domain error's code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

SEND_TIMEOUT = 60.0


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

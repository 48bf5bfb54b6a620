"""``jiayi publish``: every domain event out to Kafka as an integration CloudEvent.

The relay follows the notification log from its stored position (``Tracking("kafka-relay:
<topic>", notification id)`` in the event store's tracking table), sends a page of events,
waits until the broker acknowledged all of them, and only then stores the new position. After
a crash or a broker outage it sends again from the stored position: a consumer may see an event
twice (same CloudEvent id ``<application>:<notification id>``), never out of order, never
missing. Messages are keyed by patient, so one patient's events stay in one partition in log
order; events of aggregates without a patient (organisations, teams, quotas before booking) are
keyed by their aggregate id.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Notification, Tracking
from kafka import KafkaProducer

from consumers.leadership import Leadership
from consumers.messages import CONTENT_TYPE, domain_event
from domain.application import CareCoordination
from domain.quotas import Quota

log = logging.getLogger(__name__)
SEND_TIMEOUT = 120.0


class TrackingRecorder(Protocol):
    def max_tracking_id(self, application_name: str) -> int | None: ...
    def insert_tracking(self, tracking: Tracking) -> None: ...


class PatientKeys:
    """The patient an event concerns, learned from the events and, on a miss, the store."""

    def __init__(self, app: CareCoordination, size: int = 200_000) -> None:
        self.app = app
        self.size = size
        self.known: OrderedDict[UUID, UUID] = OrderedDict()

    def remember(self, id: UUID, patient_id: UUID) -> None:
        self.known[id] = patient_id
        self.known.move_to_end(id)
        if len(self.known) > self.size:
            self.known.popitem(last=False)

    def of(self, event: Any, topic: str) -> UUID:
        originator: UUID = event.originator_id
        if topic.startswith("domain.patients:Patient."):
            return originator
        patient_id = getattr(event, "patient_id", None)
        booking_id = getattr(event, "booking_id", None)
        if isinstance(patient_id, UUID):
            self.remember(booking_id if booking_id else originator, patient_id)
            return patient_id
        for id in (booking_id, originator):
            if isinstance(id, UUID) and id in self.known:
                self.known.move_to_end(id)
                return self.known[id]
        found = self._look_up(originator, booking_id, event.originator_version)
        self.remember(booking_id or originator, found or originator)
        return found or originator

    def _look_up(self, originator: UUID, booking_id: UUID | None, version: int) -> UUID | None:
        aggregate = self.app.load_at(originator, version)
        if isinstance(aggregate, Quota):
            booking = aggregate.bookings.get(booking_id) if booking_id else None
            return booking["patient_id"] if booking else None
        patient_id = getattr(aggregate, "patient_id", None)
        return patient_id if isinstance(patient_id, UUID) else None


class LeadershipLost(Exception):
    """The lock went while a page was out: its position is not stored (the page may be sent
    again by whoever leads now: a duplicate, never a gap)."""


class Relay:
    def __init__(
        self,
        app: CareCoordination,
        producers: Callable[[], KafkaProducer],
        topic: str,
        page: int = 1000,
        leadership: Leadership | None = None,
    ) -> None:
        self.app = app
        #: Held while this relay publishes (see :mod:`consumers.leadership`); None: always.
        self.leadership = leadership
        self.recorder: TrackingRecorder = app.recorder  # type: ignore[assignment]
        self.producers = producers
        self._producer: KafkaProducer | None = None
        self.topic = topic
        self.page = page
        self.name = f"kafka-relay:{topic}"
        self.keys = PatientKeys(app)
        self.published = 0

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self.producers()
        return self._producer

    def drop_producer(self) -> None:
        """Forget what a failed producer still buffers: it is all sent again, in order."""
        if self._producer is not None:
            self._producer.close(timeout=0)
            self._producer = None

    def close(self) -> None:
        """Close the producer (after sending what it buffers) and let the leadership go."""
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self.leadership is not None:
            self.leadership.release()

    def position(self) -> int:
        return self.recorder.max_tracking_id(self.name) or 0

    def publish_once(self) -> int:
        """Send the next page after the stored position; store the position once acked, if
        this relay (still) holds the leadership, which it takes when free."""
        start = self.position()
        page: Sequence[Notification] = self.app.recorder.select_notifications(
            start=start + 1, limit=self.page
        )
        if not page:
            return 0
        futures = []
        for n in page:
            event = self.app.mapper.to_domain_event(n)
            patient = self.keys.of(event, n.topic)
            value = domain_event(event, n.topic, n.id, self.app.name, patient)
            futures.append(
                self.producer.send(
                    self.topic,
                    key=str(patient).encode(),
                    value=value,
                    headers=[("content-type", CONTENT_TYPE.encode())],
                )
            )
        self.producer.flush(timeout=SEND_TIMEOUT)
        for f in futures:
            f.get(timeout=SEND_TIMEOUT)  # raises unless the broker acknowledged
        if self.leadership is not None and not self.leadership.hold():
            raise LeadershipLost(f"another relay may be publishing {self.topic}")
        self.recorder.insert_tracking(Tracking(self.name, page[-1].id))
        self.published += len(page)
        return len(page)

    def run(
        self, stop: threading.Event, idle_sleep: float = 0.2, standby_poll: float = 2.0
    ) -> None:
        """Publish until ``stop`` is set, while holding the leadership; stand by otherwise."""
        backoff = 0.5
        standing_by = False
        try:
            while not stop.is_set():
                if self.leadership is not None and not self.leadership.hold():
                    if not standing_by:
                        log.info("relay: another instance publishes %s; standing by", self.topic)
                        standing_by = True
                    self.drop_producer()
                    stop.wait(standby_poll)
                    continue
                if standing_by:
                    log.info("relay: leading for %s from position %d", self.topic, self.position())
                    standing_by = False
                try:
                    sent = self.publish_once()
                    backoff = 0.5
                except Exception as exc:  # broker or database away: never skip, try again
                    log.warning(
                        "relay: %s; retrying from the stored position in %.1fs", exc, backoff
                    )
                    self.drop_producer()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if not sent:
                    stop.wait(idle_sleep)
        finally:
            self.close()

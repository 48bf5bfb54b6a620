"""``jiayi publish``: domain events out to Kafka as integration CloudEvents, each to the
outbound topics of the partners in the patient's care relationship at that moment
(:mod:`consumers.routing`), and every event to the regional platform topic when one is set.

The relay follows the notification log from its one stored position (``Tracking("kafka-relay:
<partner topic prefix>", notification id)`` in the event store's tracking table), sends a page
of events to all their recipients, waits until the broker acknowledged all of them, and only
then stores the new position: ordering and exactly-once (by id) hold per recipient topic. After
a crash or a broker outage it sends again from the stored position: a consumer may see an event
twice (same CloudEvent id ``<application>:<notification id>``), never out of order, never
missing. Messages are keyed by patient, so one patient's events stay in one partition in log
order; events of aggregates without a patient (organisations, teams, quotas before booking) are
keyed by their aggregate id.

A damaged event in the log (:class:`~eventstore.errors.DamagedEvent`) stops the relay just
before it: what precedes it is published, nothing after it (a gap would be silent, and the
care relationships folded past an event not as recorded could route to the wrong partner).
The relay logs it at error level, keeps it in :attr:`Relay.stopped` and looks again every
``damaged_retry`` seconds; a repaired row lets it go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Notification, Tracking
from kafka import KafkaProducer

from consumers.messages import CONTENT_TYPE, domain_event
from consumers.routing import Router, apply_cut, route_of
from consumers.topics import outbound_topic
from domain.application import CareCoordination
from domain.quotas import Quota
from eventstore.errors import DamagedEvent
from eventstore.keys import KeyRing
from jiayi.metrics import RELAY_PUBLISHED, RELAY_SENT
from runtime.leadership import Leadership

log = logging.getLogger(__name__)
SEND_TIMEOUT = 120.0
#: Seconds before a recipient's missing outbound topic is looked for again.
RECHECK = 30.0
#: Seconds between two looks at a damaged event the relay stopped before.
DAMAGED_RETRY = 30.0


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
        prefix: str,
        page: int = 1000,
        leadership: Leadership | None = None,
        platform: str | None = None,
        ensure_topics: Callable[[list[str]], set[str]] | None = None,
        damaged_retry: float = DAMAGED_RETRY,
    ) -> None:
        self.app = app
        self.damaged_retry = damaged_retry
        #: (the position it stopped before, the damaged event met there); None: not stopped.
        self.stopped: tuple[int, DamagedEvent] | None = None
        #: Held while this relay publishes (see :mod:`runtime.leadership`); None: always.
        self.leadership = leadership
        self.recorder: TrackingRecorder = app.recorder  # type: ignore[assignment]
        self.producers = producers
        self._producer: KafkaProducer | None = None
        #: Partner topic prefix: recipients' topics are ``<prefix><org id>.out``.
        self.prefix = prefix
        #: The regional platform's topic (everything, unrouted); None: off.
        self.platform = platform
        #: Creates the missing topics it may and answers which exist: an organisation receives
        #: once its outbound topic exists (``jiayi partners add``); until then its messages are
        #: not sent (it is no partner yet). None: every topic is taken to exist.
        self.ensure_topics = ensure_topics
        self.known_topics: set[str] = set()
        #: Topics found missing, and when: asked about again after :data:`RECHECK` seconds.
        self.missing_topics: dict[str, float] = {}
        self.page = page
        self.name = f"kafka-relay:{prefix}"
        self.keys = PatientKeys(app)
        #: The care relationships folded up to :attr:`Router.position`; None: to build.
        self.router: Router | None = None
        self.published = 0
        #: Messages sent, recipients and platform counted separately.
        self.sent = 0

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
        this relay (still) holds the leadership, which it takes when free. A page is cut
        just before a damaged event; one right after the stored position raises
        :class:`DamagedEvent` (kept in :attr:`stopped`)."""
        start = self.position()
        try:
            published = self._publish_after(start)
        except DamagedEvent as exc:
            self.stopped = (start + 1, exc)
            raise
        self.stopped = None
        return published

    def _publish_after(self, start: int) -> int:
        router = self._router(start)
        select = self.app.recorder.select_notifications
        try:
            page: Sequence[Notification] = select(start=start + 1, limit=self.page)
        except DamagedEvent as exc:
            if exc.position is None or exc.position <= start + 1:
                raise
            page = select(start=start + 1, limit=self.page, stop=exc.position - 1)
        if page:
            self._forget_erased_keys()
        decoded = self._decode(page)
        if not decoded:
            return 0
        router.begin()  # a page that fails is undone: the fold stays at the stored position
        try:
            sent = self._publish(decoded, router)
        except BaseException:
            router.rollback()
            raise
        router.commit()
        self.published += len(decoded)
        self.sent += sent
        RELAY_PUBLISHED.inc(len(decoded))
        RELAY_SENT.inc(sent)
        return len(decoded)

    def _forget_erased_keys(self) -> None:
        """Drop the data keys erased since the last page (by any process, ``jiayi patients
        erase``) from the key ring's memory: an event of an erased patient still unpublished
        then goes out with its personal text reading ``[erased]``, never with the text its
        destroyed key would still have opened here."""
        keyring: KeyRing | None = getattr(self.app.mapper, "keyring", None)
        if keyring is not None:
            keyring.refresh()

    def _preload(self, page: Sequence[Notification]) -> None:
        """The keys of the page's patients in one query (each new patient would cost one)."""
        preload = getattr(self.app.mapper, "preload", None)
        if preload is not None:
            preload(page)

    def _decode(self, page: Sequence[Notification]) -> list[tuple[Notification, Any, UUID]]:
        """Each notification with its domain event and patient, up to a damaged event (which
        raises when it is the first)."""
        out: list[tuple[Notification, Any, UUID]] = []
        self._preload(page)
        for n in page:
            try:
                event = self.app.mapper.to_domain_event(n)
                patient = self.keys.of(event, n.topic)
            except DamagedEvent:
                if not out:
                    raise
                break
            out.append((n, event, patient))
        return out

    def _publish(self, page: list[tuple[Notification, Any, UUID]], router: Router) -> int:
        messages: list[tuple[str, UUID, bytes]] = []
        for n, event, patient in page:
            name = type(event).__qualname__
            for org, cut in router.route(name, event, n.id, patient):
                value = domain_event(
                    event,
                    n.topic,
                    n.id,
                    self.app.name,
                    patient,
                    partial(apply_cut, cut=cut, recipient=org),
                )
                messages.append((outbound_topic(self.prefix, org), patient, value))
            if self.platform is not None:
                value = domain_event(event, n.topic, n.id, self.app.name, patient)
                messages.append((self.platform, patient, value))
        present = self._present({topic for topic, _, _ in messages})
        messages = [m for m in messages if m[0] in present]
        futures = [
            self.producer.send(
                topic,
                key=str(patient).encode(),
                value=value,
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
            for topic, patient, value in messages
        ]
        self.producer.flush(timeout=SEND_TIMEOUT)
        for f in futures:
            f.get(timeout=SEND_TIMEOUT)  # raises unless the broker acknowledged
        if self.leadership is not None and not self.leadership.hold():
            raise LeadershipLost(f"another relay may be publishing {self.prefix}*")
        self.recorder.insert_tracking(Tracking(self.name, page[-1][0].id))
        return len(messages)

    def _router(self, start: int) -> Router:
        """The relations as of log position ``start``: the kept ones, folded further if
        another relay published meanwhile, else rebuilt from the beginning of the log."""
        router = self.router
        if router is None or router.position > start:
            router = Router()
        position = router.position
        while position < start:
            page = self.app.recorder.select_notifications(
                start=position + 1, limit=self.page, stop=start
            )
            if not page:
                break
            self._preload(page)
            for n in page:
                event = self.app.mapper.to_domain_event(n)
                name = type(event).__qualname__
                if route_of(name):  # sent to someone: whose patient it is decides to whom
                    router.replay(name, event, n.id, self.keys.of(event, n.topic))
                else:  # sent to no one: only the relations it changes
                    router.observe(name, event, n.id)
            position = page[-1].id
        router.position = start
        self.router = router
        return router

    def _present(self, topics: set[str]) -> set[str]:
        """Which of ``topics`` exist (creating those this relay may create)."""
        if self.ensure_topics is None:
            return topics
        now = time.monotonic()
        unknown = sorted(
            t
            for t in topics - self.known_topics
            if now - self.missing_topics.get(t, -RECHECK) >= RECHECK
        )
        if unknown:
            found = self.ensure_topics(unknown)
            self.known_topics |= found
            for t in unknown:
                if t in found:
                    self.missing_topics.pop(t, None)
                else:
                    self.missing_topics[t] = now
        return topics & self.known_topics

    def run(
        self, stop: threading.Event, idle_sleep: float = 0.2, standby_poll: float = 2.0
    ) -> None:
        """Publish until ``stop`` is set, while holding the leadership; stand by otherwise."""
        backoff = 0.5
        try:
            while not stop.is_set():
                # a change of leadership is logged by the duty (runtime.leadership.Duty)
                if self.leadership is not None and not self.leadership.hold():
                    self.drop_producer()
                    stop.wait(standby_poll)
                    continue
                try:
                    sent = self.publish_once()
                    backoff = 0.5
                except DamagedEvent as exc:  # never skip it: stop before it, look again slowly
                    before = self.stopped[0] if self.stopped else "?"
                    log.error(
                        "relay: stopped before position %s at a damaged event (%s): %s; "
                        "looking again in %.0f s",
                        before,
                        exc.place(),
                        exc.reason,
                        self.damaged_retry,
                    )
                    stop.wait(self.damaged_retry)
                    continue
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

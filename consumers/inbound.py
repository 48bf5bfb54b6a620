"""``jiayi consume``: partner events in, as application commands, effects exactly once.

Per polled partition batch, one event-store transaction holds the events of every message
applied, the inbox rows of those messages (CloudEvent source + id) and the partition's next
offset (``Tracking("kafka:<topic>:<partition>", offset + 1)``). On assignment the consumer
seeks to the stored offset; Kafka's committed offsets are not used. A message already in the
inbox (redelivered, or re-published by the partner) is skipped. A message that fails
validation, authorisation or a domain rule is sent to the dead-letter topic (and acknowledged
by the broker) before the batch's transaction commits, so it is never lost; after a crash
between the two it may be dead-lettered twice.

A message whose use case fails leaves the batch as it was (the unit of work rolls back what
it changed, :mod:`domain.unit_of_work`): it is dead-lettered and the others still apply.

A message touching an aggregate with a damaged event (:class:`~eventstore.errors.DamagedEvent`:
a stored row not as recorded) is dead-lettered (``damaged-aggregate``, naming the event's
place) and the others still apply; aggregates kept between batches are checked against the
hash chain before each batch uses them (on PostgreSQL the database computes the digests), so no step is
recorded on top of a row changed meanwhile.

The consumer subscribes to every partner's inbound topic at once, with a pattern
(:func:`consumers.topics.inbound_pattern`; a new partner's topic joins at the next metadata
refresh). The acting organisation is the one the topic belongs to: a message whose ``source``
names another is dead-lettered (``source-mismatch``) and nothing of it is applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from itertools import groupby
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, AggregateEvent
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from consumers.deadletter import DeadLetters, Failure, dead_letter_codes, record_size
from consumers.messages import MessageRejected, PartnerMessage, decode
from consumers.topics import inbound_pattern, org_of_inbound
from domain.application import Batch, CareCoordination
from domain.common import DomainError, NotFound
from domain.organisations import Organisation
from eventstore.errors import DamagedEvent
from eventstore.mapper import PlacedMapper
from eventstore.recorders import MessageKey
from jiayi.metrics import (
    CONSUMER_APPLIED,
    CONSUMER_BATCH,
    CONSUMER_DUPLICATES,
    CONSUMER_LAG,
    DEAD_LETTERS,
    METRICS_ERRORS,
)
from runtime.pacing import CollectBetweenBatches

log = logging.getLogger(__name__)

Item = tuple[ConsumerRecord, PartnerMessage | Failure]
RETRIES = 10
#: Aggregates kept between batches, at most.
CACHE_LIMIT = 200_000
#: More changes by others than this since the last batch: drop every kept aggregate instead.
CHANGES_LIMIT = 50_000
#: Milliseconds the consumer's loop waits for the end offsets of partitions it has not
#: fetched yet (its lag metric; the others come with the fetch responses).
LAG_TIMEOUT_MS = 2000
#: Seconds between two log lines about one partner still sending one deprecated type.
DEPRECATED_LOG_EVERY = 3600.0


class ExchangeRecorder(Protocol):
    def received(self, keys: Any) -> set[MessageKey]: ...
    def select_events_of(
        self, ids: Any, damaged: dict[UUID, DamagedEvent] | None = None
    ) -> list[StoredEvent]: ...
    def damaged_among(self, ids: Any) -> dict[UUID, DamagedEvent]: ...
    def changed_outside(self) -> bool: ...
    def position_of(self, originator_id: UUID, version: int) -> int | None: ...
    def changes_since(
        self, position: int, own: Any = (), limit: int | None = None
    ) -> list[tuple[int, UUID, int]] | None: ...
    def max_tracking_id(self, application_name: str) -> int | None: ...


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def tracking_name(tp: TopicPartition) -> str:
    return f"kafka:{tp.topic}:{tp.partition}"


#: What a partner is told when what it named is absent or not its organisation's to act on:
#: one code, message and exception name for both, so a dead letter does not tell them apart.
NOT_FOUND = "not-found"
#: A message whose ``source`` is not the organisation its inbound topic belongs to.
SOURCE_MISMATCH = "source-mismatch"
NOT_VISIBLE = "nothing with that id is visible to you"
_NOT_FOUND_CLASS = f"{NotFound.__module__}.{NotFound.__qualname__}"
#: A message touching an aggregate one of whose stored events is damaged.
DAMAGED_AGGREGATE = "damaged-aggregate"
_DAMAGED_CLASS = f"{DamagedEvent.__module__}.{DamagedEvent.__qualname__}"


#: A message over the maximum size (:attr:`DeadLetters.max_message_bytes`).
MESSAGE_TOO_LARGE = "message-too-large"
#: Kafka keys: every inbound message is keyed by the patient id (one patient's messages then
#: stay in one partition, in order).
MISSING_KEY = "missing-key"
KEY_MISMATCH = "key-mismatch"


def _key_problem(key: bytes | None, message: PartnerMessage) -> MessageRejected | None:
    """Why ``key`` is not the key ``message`` must carry (the patient id; the one its data
    names, when it names one), or None. The key is never quoted (it may be anything)."""
    if not key:
        return MessageRejected(MISSING_KEY, "the message has no key; its key is the patient id")
    try:
        patient = UUID(key.decode("ascii"))
    except ValueError:  # UnicodeDecodeError included
        return MessageRejected(KEY_MISMATCH, "the key is not a patient id (a UUID)")
    named = message.command.named_patient()
    if named is not None and named != patient:
        return MessageRejected(
            KEY_MISMATCH, "the key is not the patient the data names (data/patient_id)"
        )
    return None


def _failure(exc: Exception, key: MessageKey | None = None) -> Failure:
    if isinstance(exc, DomainError) and (exc.not_found or exc.forbidden):
        return Failure(NOT_FOUND, NOT_VISIBLE, _NOT_FOUND_CLASS, key)
    cls = type(exc)
    code = getattr(exc, "code", "domain-rule-broken")
    message = getattr(exc, "message", str(exc))
    return Failure(code, message, f"{cls.__module__}.{cls.__qualname__}", key)


def _damaged(exc: DamagedEvent, key: MessageKey | None) -> Failure:
    """The dead letter of a message touching a damaged aggregate: where the event is and what
    is wrong with it, never its content."""
    return Failure(
        DAMAGED_AGGREGATE,
        f"a stored event of an aggregate this message touches is damaged ({exc.place()}:"
        f" {exc.reason}); nothing of the message was applied",
        _DAMAGED_CLASS,
        key,
    )


_KNOWN_CODES: frozenset[str] | None = None


def _count_batch(handled: int, applied: int, dead: list[str]) -> None:
    """A recorded batch in the metrics: its size, messages applied, dead letters by code (a
    code outside :func:`dead_letter_codes` counts as ``other``: labels stay a closed set), and
    the rest, skipped as applied before."""
    global _KNOWN_CODES
    if _KNOWN_CODES is None:
        _KNOWN_CODES = frozenset(dead_letter_codes())
    CONSUMER_BATCH.observe(handled)
    CONSUMER_APPLIED.inc(applied)
    CONSUMER_DUPLICATES.inc(handled - applied - len(dead))
    for code in dead:
        DEAD_LETTERS.labels(code if code in _KNOWN_CODES else "other").inc()


class InboundConsumer:
    """A member of the partner-topic consumer group; positions live in the event store."""

    def __init__(
        self,
        app: CareCoordination,
        consumer: KafkaConsumer,
        dead_letters: DeadLetters,
        prefix: str,
        max_records: int = 2000,
        lag_every: float | None = None,
    ) -> None:
        self.app = app
        #: Seconds between two looks at the partitions' lag (the broker's end offsets, on
        #: this loop: the client is not thread-safe); None: not measured.
        self.lag_every = lag_every
        self._lag_labels: set[tuple[str, str]] = set()
        self.recorder: ExchangeRecorder = app.recorder  # type: ignore[assignment]
        self.consumer = consumer
        self.dead_letters = dead_letters
        #: Partner topic prefix: the subscription is every ``<prefix><org id>.in``.
        self.prefix = prefix
        self.max_records = max_records
        #: Next offset per assigned partition, as stored.
        self.positions: dict[TopicPartition, int | None] = {}
        self.applied = 0
        self.dead = 0
        #: Aggregates as last recorded by this consumer (see :meth:`_keep`).
        self.cache: dict[UUID, Aggregate] = {}
        #: Every change up to this log position is reflected in :attr:`cache`, and so are
        #: the positions in :attr:`own` (what this consumer recorded since).
        self.seen: int | None = None
        self.own: list[tuple[int, int]] = []
        #: Messages of a deprecated (still accepted) version received, by (type, source).
        self.deprecated: Counter[tuple[str, str]] = Counter()
        self._deprecated_logged: dict[tuple[str, str], float] = {}

    # --- positions ----------------------------------------------------------------------

    def positions_total(self) -> int:
        """Messages handled so far over the assigned partitions (offsets start at 0)."""
        return sum(p or 0 for p in self.positions.values())

    def stored(self, tp: TopicPartition) -> int | None:
        return self.recorder.max_tracking_id(tracking_name(tp))

    def seek_to_stored(self, tp: TopicPartition) -> None:
        position = self.positions[tp] = self.stored(tp)
        if position is None:
            self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, position)

    def subscribe(self) -> None:
        consumer = self

        class SeekToStored(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                for tp in revoked:
                    consumer.positions.pop(tp, None)

            def on_partitions_assigned(self, assigned: Any) -> None:
                for tp in assigned:
                    consumer.seek_to_stored(tp)
                log.info("assigned %s", sorted(f"{t.topic}:{t.partition}" for t in assigned))

        self.consumer.subscribe(pattern=inbound_pattern(self.prefix), listener=SeekToStored())

    # --- the loop -----------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        idle_exit: float | None = None,
        progress: Callable[[InboundConsumer], object] | None = None,
    ) -> None:
        """The consumer process's loop (``jiayi consume``): poll until ``stop`` is set, or
        until ``idle_exit`` seconds pass without a message once partitions are assigned;
        ``progress`` is called after every poll. The cyclic garbage collector runs between
        batches (:class:`CollectBetweenBatches`)."""
        self.subscribe()
        idle_since = time.monotonic()
        lag_due = 0.0
        with CollectBetweenBatches() as collector:
            while not stop.is_set():
                if self.poll_once() or not self.positions:  # idle counts once assigned
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                if self.lag_every is not None and time.monotonic() >= lag_due:
                    self.note_lag()
                    lag_due = time.monotonic() + self.lag_every
                collector.between_batches()
                if progress is not None:
                    progress(self)
        if self.lag_every is not None:
            self.note_lag()

    def note_lag(self) -> None:
        """``jiayi_consumer_lag_messages`` per assigned partition: the broker's end offset
        minus the stored position. The end offset is the high watermark the broker sent with
        its last fetch response (kept by the client: no request, so the loop never waits on
        it); only a partition not fetched yet is asked for it, with a bound (a request on the
        loop stalls behind the fetches in flight). A partition without a stored position
        counts from its beginning. A failure is logged and counted, never raised."""
        parts = list(self.positions)
        try:
            ends: dict[TopicPartition, int | None] = {
                tp: self.consumer.highwater(tp) for tp in parts
            }
            unfetched = [tp for tp, end in ends.items() if end is None]
            if unfetched:
                ends.update(self.consumer.end_offsets(unfetched, timeout_ms=LAG_TIMEOUT_MS))
            unstored = [tp for tp in parts if self.positions.get(tp) is None]
            starts = (
                self.consumer.beginning_offsets(unstored, timeout_ms=LAG_TIMEOUT_MS)
                if unstored
                else {}
            )
        except Exception as exc:
            log.warning("consumer lag could not be read: %s", exc)
            METRICS_ERRORS.labels("consumer-lag").inc()
            return
        labels: set[tuple[str, str]] = set()
        for tp in parts:
            end = ends.get(tp)
            position = self.positions.get(tp)
            start = position if position is not None else starts.get(tp)
            if end is None or start is None:
                continue
            label = (tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*label).set(max(end - start, 0))
            labels.add(label)
        for gone in self._lag_labels - labels:  # revoked: another member reports it
            CONSUMER_LAG.remove(*gone)
        self._lag_labels = labels

    def poll_once(self, timeout_ms: int = 500) -> int:
        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        except KafkaError as exc:  # the client reconnects by itself; wait and poll again
            log.warning("poll failed: %s", exc)
            time.sleep(1)
            return 0
        handled = 0
        for tp, records in polled.items():
            try:
                handled += self.handle(tp, records)
            except (OperationalError, InterfaceError, IntegrityError, KafkaError) as exc:
                log.warning("partition %s: %s; going back to the stored position", tp, exc)
                time.sleep(1)
                self._rewind(tp)
            except DamagedEvent as exc:  # not expected (see _apply_batch): stop this partition
                log.error("partition %s: %s; going back to the stored position", tp, exc)
                time.sleep(1)
                self._rewind(tp)
        return handled

    def _rewind(self, tp: TopicPartition) -> None:
        try:
            self.seek_to_stored(tp)
        except Exception as exc:  # database still away: the next failure rewinds again
            log.warning("could not rewind %s: %s", tp, exc)
            self.positions.pop(tp, None)
            self.consumer.seek(tp, self.consumer.position(tp))

    # --- one partition's batch ------------------------------------------------------------

    def handle(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> int:
        start = self.positions.get(tp)
        today = self.app.now().date()  # the day deprecated versions' sunsets are checked on
        items: list[Item] = [
            (r, self._decode(r, today)) for r in records if start is None or r.offset >= start
        ]
        for attempt in range(RETRIES):
            if not items:
                return 0
            try:
                # First optimistically: the inbox is only read when something fails. A message
                # applied before that applies again breaks the inbox's key: then read it first.
                self._apply(tp, items, read_inbox=attempt > 0)
                self.positions[tp] = items[-1][0].offset + 1
                return len(items)
            except IntegrityError:
                # An aggregate changed meanwhile, another member applied some of these, or a
                # message was applied before.
                stored = self.stored(tp)
                if stored is not None:
                    items = [i for i in items if i[0].offset >= stored]
                if attempt:
                    time.sleep(0.05 * attempt)
        raise IntegrityError(f"{tp}: kept conflicting")

    def _decode(self, record: ConsumerRecord, today: date) -> PartnerMessage | Failure:
        size, limit = record_size(record), self.dead_letters.max_message_bytes
        if size > limit:  # before anything of it is parsed
            return _failure(
                MessageRejected(
                    MESSAGE_TOO_LARGE,
                    f"the message is {size} bytes (key, value and headers); at most {limit} are"
                    " accepted",
                )
            )
        try:
            message = decode(record.value, today)
        except MessageRejected as exc:
            return _failure(exc)
        sender = org_of_inbound(self.prefix, record.topic)
        if sender != message.org_id:
            # The topic is what the partner authenticated to write; the message only claims.
            return _failure(
                MessageRejected(
                    SOURCE_MISMATCH,
                    f"{message.source} is not the organisation of topic {record.topic}",
                )
            )
        wrong_key = _key_problem(record.key, message)
        if wrong_key is not None:
            return _failure(wrong_key)
        if message.sunset is not None:
            self._note_deprecated(message, message.sunset)
        return message

    def _note_deprecated(self, message: PartnerMessage, sunset: date) -> None:
        """Count a message of a deprecated version by type and sender, and log who still sends
        it (the type and the organisation's URN: no personal data), at most once an hour per
        sender and type."""
        key = (message.type, message.source)
        self.deprecated[key] += 1
        now = time.monotonic()
        last = self._deprecated_logged.get(key)
        if last is None or now - last >= DEPRECATED_LOG_EVERY:
            self._deprecated_logged[key] = now
            log.warning(
                "deprecated %s from %s (%d received by this consumer); accepted until %s",
                message.type,
                message.source,
                self.deprecated[key],
                (sunset - timedelta(days=1)).isoformat(),
            )

    def _keep(self, batch: Batch) -> None:
        """After a batch is recorded, its aggregates equal the stored ones: keep them for the
        next batches. Another writer (the API, another member of the group) may change one
        meanwhile: :meth:`_forget_changed` drops it before it is used again (an aggregate a
        batch only reads is never checked when the batch is recorded). A stored row of it
        changed in place (no new event: a damaged one) is found by :meth:`_prefetch`'s check
        against the hash chain."""
        if len(self.cache) + len(batch.aggregates) > CACHE_LIMIT:
            self.cache.clear()  # what stays (this batch's aggregates) is as recorded
        self.cache.update(batch.aggregates)
        if batch.recorded is not None:
            self.own.append(batch.recorded)

    def _forget_all(self) -> None:
        self.cache.clear()
        self.seen = None
        self.own = []

    def _forget_changed(self) -> None:
        """Drop the kept aggregates that others changed since :attr:`seen`: one query over the
        log's newest positions (the log is written in position order, under a table lock, so
        nothing can appear later at or below a position already read)."""
        if self.seen is None or not self.cache:
            self._forget_all()
            self.seen = self.app.max_position()  # before anything is read for the cache
            return
        changes = self.recorder.changes_since(self.seen, self.own, CHANGES_LIMIT)
        if changes is None:  # much was written meanwhile: start afresh
            self._forget_all()
            self.seen = self.app.max_position()
            return
        for _, id, version in changes:
            kept = self.cache.get(id)
            if kept is not None and kept.version < version:
                del self.cache[id]
        self.seen = max([self.seen, *(last for _, last in self.own), *(c[0] for c in changes)])
        self.own = []

    def _apply(self, tp: TopicPartition, items: list[Item], read_inbox: bool) -> None:
        try:
            self._apply_batch(tp, items, read_inbox)
        except BaseException:
            self._forget_all()  # a failed batch may have changed kept aggregates in place
            raise

    def _apply_batch(self, tp: TopicPartition, items: list[Item], read_inbox: bool) -> None:
        """Run the batch's commands; record their events, the inbox rows and the partition's
        next offset in one transaction; dead-letter what failed (before that commit).

        With ``read_inbox`` the messages applied before are skipped up front; without, the
        inbox is read only for the messages that failed (a re-published message typically
        fails the second time), and one that applies twice makes the recording fail."""
        messages = [m for _, m in items if isinstance(m, PartnerMessage)]
        seen = self.recorder.received({m.key for m in messages}) if read_inbox else set()
        failed: list[tuple[ConsumerRecord, Failure]] = []
        received: list[MessageKey] = []
        with self.app.batch() as batch:
            damaged = self._prefetch(batch, messages)
            for record, message in items:
                if isinstance(message, Failure):
                    failed.append((record, message))
                    continue
                key = message.key
                if key in seen:
                    continue  # applied before: redelivered or re-published
                hit = self._damaged_touched(message, damaged)
                if hit is not None:
                    failed.append((record, _damaged(hit, key)))
                    continue
                try:
                    self._authorise(message)
                    message.command.run(self.app, message.actor, message.at)
                except (DomainError, MessageRejected) as exc:
                    # the use case left the batch as it was (domain.unit_of_work)
                    failed.append((record, _failure(exc, key)))
                    continue
                except DamagedEvent as exc:  # an aggregate the use case loaded itself
                    if exc.originator_id not in damaged:
                        damaged[exc.originator_id] = self._note(exc)
                    failed.append((record, _damaged(damaged[exc.originator_id], key)))
                    continue
                seen.add(key)
                received.append(key)
            if failed and not read_inbox:
                # Before anything is dead-lettered: was a failing message applied before (then
                # it is no dead letter), or did one applied before run again (then the others'
                # outcomes may depend on it: run the batch again, reading the inbox first)?
                keys = {f.key for _, f in failed if f.key}
                before = self.recorder.received(keys | set(received))
                if before & set(received):
                    raise IntegrityError("a message applied before ran again")
                failed = [(r, f) for r, f in failed if f.key is None or f.key not in before]
            self.dead_letters.send(failed)
            self.app.record_batch(
                batch, Tracking(tracking_name(tp), items[-1][0].offset + 1), received=received
            )
            self._keep(batch)
        self.applied += len(received)
        self.dead += len(failed)
        _count_batch(len(items), len(received), [f.code for _, f in failed])

    def _authorise(self, message: PartnerMessage) -> None:
        """The source names a registered organisation; the domain decides what it may do."""
        try:
            self.app.load(Organisation, message.org_id)
        except NotFound:
            raise MessageRejected(
                "unknown-source", f"{message.source} is not a registered organisation"
            ) from None

    def _prefetch(self, batch: Batch, messages: list[PartnerMessage]) -> dict[UUID, DamagedEvent]:
        """Read every aggregate the batch will need in one query; the damaged ones (each with
        its first damaged event) are not seeded but returned.

        Kept aggregates are checked against the hash chain when rows of the log were updated
        or deleted since the last batch (``changed_outside``: a counter the store's triggers
        bump; the application only inserts), in one query (on PostgreSQL the database computes
        the digests and no events are read); the damaged ones are dropped, and come back
        below as damaged: no step is recorded on top of a row changed since it was kept."""
        ids: set[UUID] = {m.org_id for m in messages}
        for m in messages:
            ids.update(m.command.touches())
        self._forget_changed()
        if self.recorder.changed_outside() and self.cache:
            for id in self.recorder.damaged_among(list(self.cache)):
                self.cache.pop(id, None)
        for known in ids & self.cache.keys():
            batch.seed(self.cache[known])
        wanted = ids - batch.aggregates.keys()
        damaged: dict[UUID, DamagedEvent] = {}
        stored = self.recorder.select_events_of(wanted, damaged)
        cast(PlacedMapper, self.app.mapper).preload(stored)  # their patients' keys: one query
        batch.seed_absent(wanted - {s.originator_id for s in stored} - damaged.keys())
        for id, group in groupby(stored, key=lambda s: s.originator_id):
            aggregate: Aggregate | None = None
            try:
                for stored_event in group:
                    event = cast(AggregateEvent, self.app.mapper.to_domain_event(stored_event))
                    aggregate = event.mutate(aggregate)
            except DamagedEvent as exc:  # does not decrypt or decode
                damaged.setdefault(_uuid(id), exc)
                continue
            if aggregate is not None:
                batch.seed(aggregate)
        return {id: self._note(exc) for id, exc in damaged.items()}

    def _note(self, exc: DamagedEvent) -> DamagedEvent:
        """Log a damaged aggregate a batch met and forget it if kept; the exception, with its
        event's position looked up when it has none."""
        if exc.position is None:
            try:
                position = self.recorder.position_of(exc.originator_id, exc.version)
            except Exception:  # naming the place is best effort
                log.debug("could not look up the position of %s", exc, exc_info=True)
                position = None
            exc = DamagedEvent(
                originator_id=exc.originator_id,
                version=exc.version,
                topic=exc.topic,
                reason=exc.reason,
                position=position,
            )
        self.cache.pop(exc.originator_id, None)
        log.error(
            "damaged event (%s): %s; messages touching aggregate %s are dead-lettered (%s)",
            exc.place(),
            exc.reason,
            exc.originator_id,
            DAMAGED_AGGREGATE,
        )
        return exc

    @staticmethod
    def _damaged_touched(
        message: PartnerMessage, damaged: dict[UUID, DamagedEvent]
    ) -> DamagedEvent | None:
        if not damaged:
            return None
        if message.org_id in damaged:
            return damaged[message.org_id]
        for id in message.command.touches():
            if id in damaged:
                return damaged[id]
        return None

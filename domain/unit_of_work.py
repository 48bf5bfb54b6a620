"""The unit of work: how a use case loads aggregates, lets them decide, and records the result.

Every use case of :class:`domain.application.CareCoordination` is a method decorated with
:func:`use_case` that calls :meth:`UnitOfWork.load` (and :meth:`UnitOfWork.new_id` for a new
aggregate), asks the aggregates to decide, and hands every aggregate it changed to
:meth:`UnitOfWork.commit` once, at the end. This module is the whole contract of that plumbing:

1. **All or nothing.** ``commit`` records the events of every aggregate given, atomically.
   A use case that raises (a broken rule, a bug) leaves every aggregate as it was before it
   started, in both modes below: the aggregates it had changed are rolled back by
   :func:`use_case`. A use case may therefore let an aggregate decide a step and only then
   find out that another aggregate refuses the next one; nothing half-done survives.
2. **Retries.** An optimistic-concurrency conflict (``IntegrityError``: another writer changed
   an aggregate meanwhile, or took the new id) re-runs the use case from the start, queued
   behind this process's other retries of the same use case; after ``MAX_ATTEMPTS`` it gives
   up with :class:`TooMuchContention`. Use cases must have no effect outside the aggregates
   (no messages sent, no files written), so running one again is harmless.
3. **Ids.** ``new_id(None)`` is a fresh random id; a chosen id already taken (recorded, or
   created earlier in the same batch) raises :class:`AlreadyExists`, which is no race to retry.
4. **Two modes.** Immediate (the default): each use case is one transaction and ``commit``
   returns the log position reached. Batch (:meth:`UnitOfWork.batch`, for the Kafka consumer;
   :meth:`UnitOfWork.bulk` for generating histories): ``commit`` writes nothing, the events join
   the thread's :class:`Batch`, ``load`` returns the batch's copy of an aggregate (an identity
   map, so a later use case sees an earlier one's changes) and positions are unknown:
   ``commit`` returns :data:`BATCHED` (0) until :meth:`UnitOfWork.record_batch` writes the
   whole batch, with a position in another system's log, in one transaction. Use cases are the
   same code in both modes; the mode belongs to the thread that opened the batch.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Recording,
)
from eventsourcing.domain import Aggregate, AggregateEvent
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Tracking

from domain import personal
from domain.common import DomainError, NotFound

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A", bound=Aggregate)
U = TypeVar("U", bound="UnitOfWork")

MAX_ATTEMPTS = 30
#: Retry pauses: BACKOFF_BASE * 2**attempt seconds at most, never more than BACKOFF_CAP.
BACKOFF_BASE = 0.001
BACKOFF_CAP = 0.1
#: What :meth:`UnitOfWork.commit` returns inside a batch: the position is not known yet.
BATCHED = 0


class AlreadyExists(DomainError):
    """The id chosen for a new record is already taken."""

    code = "already-exists"


class TooMuchContention(DomainError):
    """Concurrent writers kept changing the same aggregate; the request was not applied."""

    code = "too-much-contention"


@dataclass(frozen=True)
class Outcome:
    """What a command did: the aggregate it created or changed and the log position reached
    (:data:`BATCHED` inside a batch, where positions are known only once it is recorded)."""

    id: UUID
    position: int


class Batch:
    """What use cases run inside :meth:`UnitOfWork.batch` decided, not yet recorded.

    Aggregates loaded or changed in the batch are kept (an identity map), so a later use case in
    the same batch sees the changes of an earlier one.
    """

    def __init__(self, autoflush: int | None = None) -> None:
        self.processing: ProcessingEvent[UUID] = ProcessingEvent()
        self.aggregates: dict[UUID, Aggregate] = {}
        self.absent: set[UUID] = set()
        #: Write the events collected so far whenever there are this many (bulk mode).
        self.autoflush = autoflush
        #: The log positions (first, last) the batch's events took when last recorded.
        self.recorded: tuple[int, int] | None = None

    def seed(self, aggregate: Aggregate) -> None:
        """Offer an aggregate loaded elsewhere (in bulk) so the use cases need not load it."""
        self.aggregates.setdefault(aggregate.id, aggregate)

    def seed_absent(self, ids: set[UUID]) -> None:
        """Say that these aggregates do not exist (a bulk read found nothing for them)."""
        self.absent |= ids - self.aggregates.keys()

    @property
    def size(self) -> int:
        """How many events the batch holds."""
        return len(self.processing.events)

    @property
    def dirty(self) -> bool:
        """An aggregate holds changes no use case committed (never true after a use case ends:
        :func:`use_case` rolls back what a failed one changed)."""
        return any(a.pending_events for a in self.aggregates.values())


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, full jitter."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def use_case(
    func: Callable[Concatenate[U, P], R],
) -> Callable[Concatenate[U, P], R]:
    """Make a method a use case: all or nothing, retried on a version conflict.

    An attempt that raises leaves every aggregate as it was (:meth:`UnitOfWork.roll_back`).
    The first attempt runs freely. After a conflict, the use case is re-run while holding a
    lock shared by this process's retries of the same use case, pausing (exponential backoff,
    full jitter) between further conflicts: the losers of a race on one hot aggregate (many
    bookings of one quota at once) queue instead of colliding again and again. Between
    processes the optimistic check still decides; the lock only saves wasted attempts. A use
    case called by another runs inside the caller's attempt.
    """
    retries = threading.RLock()

    @functools.wraps(func)
    def wrapper(uow: U, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if uow._running():
            return func(uow, *args, **kwargs)

        def attempt() -> R:
            uow._local.running = True
            try:
                return func(uow, *args, **kwargs)
            except BaseException:
                uow.roll_back()
                raise
            finally:
                uow._local.running = False

        try:
            return attempt()
        except IntegrityError:
            pass
        with retries:
            for n in range(1, MAX_ATTEMPTS):
                try:
                    return attempt()
                except IntegrityError:
                    time.sleep(backoff(n))
        raise TooMuchContention("the request kept conflicting with concurrent changes")

    return wrapper


class UnitOfWork(Application[UUID]):
    """An event-sourced application whose use cases follow this module's contract."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env=dict(env or {}))
        self._local = threading.local()
        #: Called with the patients whose personal data the events about to be stored hold,
        #: and the identifier each patient registered by them is found by (the deployment
        #: gives each a data key there, in one go, and keeps the identifier's blind index
        #: beside it: ``eventstore.keys``).
        self.before_record: Callable[[set[UUID], dict[UUID, str]], None] | None = None
        #: Called by :meth:`close` (what the deployment attached: the key ring's connection).
        self.on_close: list[Callable[[], None]] = []

    def close(self) -> None:
        for closing in self.on_close:
            closing()
        super().close()

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """Every write goes through here: it says whose personal data each event holds
        (``domain.personal``), so the event store seals it with that patient's key."""
        found = personal.subjects(processing_event.events, processing_event.aggregates)
        if not found:
            return super()._record(processing_event)
        if self.before_record is not None:
            self.before_record(set(found.values()), personal.found_by(processing_event.events))
        token = personal.SUBJECTS.set(found)
        try:
            return super()._record(processing_event)
        finally:
            personal.SUBJECTS.reset(token)

    # --- inside a use case ----------------------------------------------------------------

    def load(self, cls: type[A], id: UUID) -> A:
        """The aggregate ``id`` of type ``cls``, or :class:`NotFound` (also when ``id`` is an
        aggregate of another type)."""
        batch = self._batch()
        found: Aggregate | None = batch.aggregates.get(id) if batch else None
        if found is None and batch is not None and id in batch.absent:
            raise NotFound(f"no {cls.__name__.lower()} {id}", kind=cls.__name__)
        if found is None:
            try:
                found = self.repository.get(id)
            except AggregateNotFoundError:
                raise NotFound(f"no {cls.__name__.lower()} {id}", kind=cls.__name__) from None
            if batch is not None:
                batch.aggregates[id] = found
        if not isinstance(found, cls):
            raise NotFound(f"no {cls.__name__.lower()} {id}", kind=cls.__name__)
        return found

    def new_id(self, id: UUID | None) -> UUID:
        """A new aggregate's id: the one the caller chose (:class:`AlreadyExists` when taken)
        or a random one. A race for the same id is still caught when the events are written."""
        if id is None:
            return uuid4()
        batch = self._batch()
        if batch is not None:
            if id in batch.aggregates:
                raise AlreadyExists(f"{id} is already taken", id=str(id))
            if id in batch.absent:
                return id
        if self._taken(id):
            raise AlreadyExists(f"{id} is already taken", id=str(id))
        return id

    def _taken(self, id: UUID) -> bool:
        """Whether ``id`` has events: asked of the recorder without reading one when it can
        (``has_events``: the event store's recorders check every event they return against
        the hash chain, work an existence check does not need)."""
        has_events = getattr(self.recorder, "has_events", None)
        if has_events is not None:
            return bool(has_events(id))
        return bool(self.recorder.select_events(id, limit=1))

    def commit(self, *aggregates: Aggregate | None) -> int:
        """Record what the aggregates decided, atomically; the log position reached.

        Inside a batch nothing is written yet: the events join the batch and the position is
        :data:`BATCHED`.
        """
        batch = self._batch()
        if batch is not None:
            for aggregate in aggregates:
                if aggregate is not None:
                    # What ProcessingEvent.collect_events does, without its isinstance checks
                    # against runtime protocols (slow on Python 3.11, and per use case here).
                    batch.processing.events.extend(aggregate.collect_events())
                    batch.processing.aggregates[aggregate.id] = aggregate
                    batch.aggregates[aggregate.id] = aggregate
            if batch.autoflush is not None and batch.size >= batch.autoflush:
                self.record_batch(batch)
            return BATCHED
        recordings = self.save(*aggregates)
        return max((r.notification.id for r in recordings), default=self.max_position())

    def roll_back(self) -> None:
        """Undo what a failed use case changed. Outside a batch its aggregates were its own
        and are simply dropped; inside, each batch aggregate holding uncommitted changes is
        rebuilt as the batch had it: its stored events, then the batch's unrecorded ones."""
        batch = self._batch()
        if batch is None:
            return
        for id, aggregate in list(batch.aggregates.items()):
            if aggregate.pending_events:
                rebuilt = self._as_batched(id)
                if rebuilt is None:
                    del batch.aggregates[id]
                else:
                    batch.aggregates[id] = rebuilt

    def _as_batched(self, id: UUID) -> Aggregate | None:
        batch = self._batch()
        assert batch is not None
        try:
            aggregate: Aggregate | None = self.repository.get(id)
        except AggregateNotFoundError:
            aggregate = None
        for event in batch.processing.events:
            if event.originator_id == id and (
                aggregate is None or event.originator_version > aggregate.version
            ):
                aggregate = cast(AggregateEvent, event).mutate(aggregate)
        return aggregate

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    # --- batches: several use cases, one transaction --------------------------------------

    def _batch(self) -> Batch | None:
        batch: Batch | None = getattr(self._local, "batch", None)
        return batch

    def _running(self) -> bool:
        return bool(getattr(self._local, "running", False))

    @contextmanager
    def batch(self, autoflush: int | None = None) -> Iterator[Batch]:
        """Run use cases in this thread without writing; :meth:`record_batch` writes them.

        Use cases keep their signatures and rules; one that raises leaves the batch as it was.
        """
        if self._batch() is not None:
            raise RuntimeError("batches do not nest")
        self._local.batch = batch = Batch(autoflush)
        try:
            yield batch
        finally:
            self._local.batch = None

    @contextmanager
    def bulk(self, flush_every: int = 1000) -> Iterator[Batch]:
        """Single-writer bulk mode for generating histories (the demo, benchmarks): a batch
        written about ``flush_every`` events at a time, in the order the use cases decided them,
        instead of one transaction per use case. The aggregates stay in the batch as a cache,
        which is only right while nothing else writes."""
        with self.batch(autoflush=flush_every) as batch:
            yield batch
            self.record_batch(batch)

    def record_batch(self, batch: Batch, tracking: Tracking | None = None, **kwargs: Any) -> int:
        """Write a batch's events and ``tracking`` (a position in another system's log) in one
        transaction; ``kwargs`` go to the recorder. Raises ``IntegrityError`` on a conflict (an
        aggregate changed meanwhile, a new id was taken, or the tracked position was already
        recorded)."""
        if batch.dirty:
            raise RuntimeError("changes outside a use case left uncommitted events in the batch")
        if tracking is not None and not isinstance(self.recorder, ProcessRecorder):
            raise RuntimeError("tracking needs a process recorder (APPLICATION_RECORDER_TOPIC)")
        batch.processing.tracking = tracking
        batch.processing.saved_kwargs.update(kwargs)
        recordings = self._record(batch.processing) if batch.processing.events or tracking else []
        self._take_snapshots(batch.processing)
        self._notify(recordings)
        batch.processing = ProcessingEvent()
        positions = [r.notification.id for r in recordings]
        batch.recorded = (min(positions), max(positions)) if positions else None
        return max(positions, default=0)

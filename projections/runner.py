"""The runner: follows the one ordered log and keeps every view up to date, in batches.

Each batch is read once, decoded once and folded by every projection whose position is behind
it; the changed rows of all projections and their new positions are written in ONE transaction.
Positions are moved with compare-and-set (``UPDATE ... WHERE position = expected``), so a crash,
a restart or a second runner never loses or double-applies an event.

``rebuild`` drops and recreates views and bulk-loads them from the log (optionally only events
recorded up to ``as_of``) in one transaction: readers see the old views until it commits.

A damaged event (:class:`~eventstore.errors.DamagedEvent`) stops the views just before it:
``run_once`` applies what precedes it and then raises, so the views are never built past a
row that is not as recorded, and nothing is skipped. :class:`RunnerThread` records it and looks
again slowly (a repaired row lets it go on); ``rebuild`` fails as a whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventsourcing.persistence import Notification

from eventstore.errors import DamagedEvent
from projections.base import Projection, Rows
from projections.care import CareProjection
from projections.directory import DirectoryProjection
from projections.events import Ev, LogReader
from projections.relations import RelationsProjection
from projections.store import ViewStore
from projections.timeline import TimelineProjection
from runtime.leadership import Leadership
from runtime.pacing import CollectBetweenBatches

log = logging.getLogger(__name__)

#: Every projection, in the order they fold a batch. Names are stable: they key the tracking.
PROJECTIONS: tuple[type[Projection], ...] = (
    DirectoryProjection,
    TimelineProjection,
    CareProjection,
    RelationsProjection,
)
BATCH = 2000
REBUILD_PAGE = 5000
#: Seconds between two looks at a damaged event the runner stopped at.
DAMAGED_RETRY = 30.0
#: Timeline rows kept in memory during a rebuild before they are streamed to the store.
APPEND_FLUSH = 50_000


class PositionMoved(Exception):
    """Another writer moved a view's position meanwhile: this batch was not applied."""


class NotLeader(Exception):
    """This runner no longer holds the projections duty: the batch was not applied."""


def select(names: Sequence[str] | None = None) -> list[Projection]:
    known = {p.name: p for p in PROJECTIONS}
    if names:
        unknown = set(names) - set(known)
        if unknown:
            raise ValueError(f"unknown views: {', '.join(sorted(unknown))}")
    return [cls() for name, cls in known.items() if not names or name in names]


SHAPES = "projection_shapes"


def shape(projection: Projection) -> str:
    """A fingerprint of a projection's tables (names, columns, keys, indexes)."""
    text = repr([(t.name, t.columns, t.pk, t.indexes) for t in projection.tables])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def setup(store: ViewStore, projections: Sequence[Projection]) -> None:
    """Create the tracking table and any missing view tables (position 0 for new views).

    A view whose tables changed shape since they were made (a new version of jiayi) is made
    again, empty, at position 0: the runner rebuilds it from the log."""
    store.ensure_tracking()
    store.execute(f"CREATE TABLE IF NOT EXISTS {SHAPES} (name TEXT PRIMARY KEY, shape TEXT)")
    known = store.positions()
    shapes = {r["name"]: r["shape"] for r in store.rows(f"SELECT name, shape FROM {SHAPES}")}
    for p in projections:
        current = shape(p)
        if p.name in known and shapes.get(p.name) == current:
            continue
        if p.name in known:  # changed, or made before shapes were recorded
            log.warning("view %s changed shape: made again and rebuilt from the log", p.name)
        with store.transaction():
            for table in p.tables:
                store.drop(table)
                store.create(table)
            store.set_position(p.name, 0)
            record_shape(store, p)


def shaped_as_now(store: ViewStore) -> bool:
    """Whether every view of ``store`` has the shape this version of jiayi gives it (an as-of
    replay store built by an older version does not: it is built again)."""
    found = {r["name"]: r["shape"] for r in store.rows(f"SELECT name, shape FROM {SHAPES}")}
    return all(found.get(p.name) == shape(p) for p in select())


def record_shape(store: ViewStore, projection: Projection) -> None:
    store.execute(f"CREATE TABLE IF NOT EXISTS {SHAPES} (name TEXT PRIMARY KEY, shape TEXT)")
    store.execute(f"DELETE FROM {SHAPES} WHERE name = ?", (projection.name,))
    store.execute(
        f"INSERT INTO {SHAPES} (name, shape) VALUES (?, ?)", (projection.name, shape(projection))
    )


class Runner:
    """Folds batches of the log into the views of one store."""

    def __init__(
        self, store: ViewStore, reader: LogReader, projections: Sequence[Projection] | None = None
    ) -> None:
        self.store = store
        self.reader = reader
        self.projections = list(projections or select())
        self.rows = {p.name: Rows(store, p.table_map()) for p in self.projections}
        #: Asked just before each batch is written: False stops it (:class:`NotLeader`).
        self.guard: Callable[[], bool] | None = None
        setup(store, self.projections)

    def positions(self) -> dict[str, int]:
        found = self.store.positions()
        return {p.name: found.get(p.name, 0) for p in self.projections}

    def position(self) -> int:
        return min(self.positions().values(), default=0)

    def run_once(self, limit: int = BATCH) -> int:
        """Process the next batch; returns how many notifications it covered (0: caught up).

        A damaged event in the batch: the events before it are processed, and the next call
        raises :class:`DamagedEvent` (the views stop just before it)."""
        positions = self.positions()
        start = min(positions.values())
        page, events = self._read(start, limit)
        if not page:
            return 0
        last = page[-1].id
        try:
            for p in self.projections:
                rows, done = self.rows[p.name], positions[p.name]
                for ev in events:
                    if ev.position > done:
                        p.apply(ev, rows)
            if self.guard is not None and not self.guard():
                raise NotLeader("the projections duty went to another runner")
            with self.store.transaction():
                for p in self.projections:
                    if positions[p.name] >= last:
                        continue
                    self.rows[p.name].flush()
                    if not self.store.advance(p.name, positions[p.name], last):
                        raise PositionMoved(p.name)
        except BaseException:
            self.forget()
            raise
        for rows in self.rows.values():
            rows.committed()
        return len(page)

    def _read(self, start: int, limit: int) -> tuple[Sequence[Notification], list[Ev]]:
        """The page after ``start``, decoded; cut just before a damaged event, which raises
        when it is the first."""
        try:
            page = self.reader.page(start, limit)
            return page, self.reader.decode(page)
        except DamagedEvent as exc:
            if exc.position is None or exc.position <= start + 1:
                raise
            page = self.reader.page(start, limit, stop=exc.position - 1)
            return page, self.reader.decode(page)

    def catch_up(self, limit: int = BATCH) -> int:
        total = 0
        while n := self.run_once(limit):
            total += n
        return total

    def forget(self) -> None:
        for rows in self.rows.values():
            rows.forget()


@dataclass
class RebuildSummary:
    views: list[str]
    events: int
    position: int
    seconds: float
    rows: dict[str, int]

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds else 0.0
        out = [
            f"rebuilt {', '.join(self.views)} from {self.events:,} events up to position "
            f"{self.position:,} in {self.seconds:.1f} s ({rate:,.0f} events/s)"
        ]
        out += [f"  {name}: {count:,} rows" for name, count in sorted(self.rows.items())]
        return out


def rebuild(
    store: ViewStore,
    reader: LogReader,
    names: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    as_of: str | None = None,
    pace_gc: bool = True,
) -> RebuildSummary:
    """Rebuild views from the log (events recorded up to ``as_of`` when given), atomically.

    ``pace_gc``: run the cyclic garbage collector between pages (:class:`CollectBetweenBatches`,
    process-wide: not for a rebuild inside a process serving other threads)."""
    began = time.perf_counter()
    projections = select(names)
    store.ensure_tracking()
    rows = {p.name: Rows(store, p.table_map(), empty=True) for p in projections}
    counts: dict[str, int] = {}
    after = events = 0
    collector = CollectBetweenBatches() if pace_gc else None
    with store.transaction(), collector or contextlib.nullcontext():
        for p in projections:
            for table in p.tables:
                store.drop(table)
                store.create(table, with_keys=False)
        while page := reader.page(after, REBUILD_PAGE):
            if collector is not None:
                collector.between_batches()
            batch = reader.decode(page)
            if as_of is not None:
                batch = [ev for ev in batch if ev.timestamp <= as_of]
            for p in projections:
                r, apply = rows[p.name], p.apply
                for ev in batch:
                    apply(ev, r)
                if any(len(a) > APPEND_FLUSH for a in r.appended.values()):
                    for table in p.tables:
                        if r.appended[table.name]:
                            store.bulk_insert(table, r.appended[table.name])
                            counts[table.name] = counts.get(table.name, 0) + len(
                                r.appended[table.name]
                            )
                            r.appended[table.name] = []
            events += len(batch)
            after = page[-1].id
            if progress:
                progress(len(page))
        for p in projections:
            r = rows[p.name]
            for table in p.tables:
                counts[table.name] = (
                    counts.get(table.name, 0)
                    + len(r.appended[table.name])
                    + sum(1 for v in r.cache[table.name].values() if v is not None)
                )
            r.bulk_load()
            for table in p.tables:
                store.add_keys(table)
            store.set_position(p.name, after)
            record_shape(store, p)
    return RebuildSummary(
        [p.name for p in projections], events, after, time.perf_counter() - began, counts
    )


class RunnerThread:
    """The runner in a background thread (the embedded default runs it in-process).

    ``open_store`` makes a fresh connection: after any failure (a lost connection included)
    the thread forgets its cache, reconnects and carries on from the stored positions. At a
    damaged event it stops (the views stay just before it), keeps it in :attr:`damaged`, logs
    it and looks again every ``damaged_retry`` seconds, going on once the row is repaired.

    With ``leadership`` (the projections duty, :mod:`runtime.leadership`) it works only while
    it holds it: it checks before writing each batch (and every ``recheck`` seconds when idle)
    and stops at once when the lock is gone; otherwise it stands by, looking every
    ``standby_poll`` seconds. A stop lets the duty go.
    """

    def __init__(
        self,
        open_store: Callable[[], ViewStore],
        reader: LogReader,
        poll: float = 0.05,
        name: str = "projections-runner",
        damaged_retry: float = DAMAGED_RETRY,
        leadership: Leadership | None = None,
        standby_poll: float = 1.0,
        recheck: float = 1.0,
    ) -> None:
        self.open_store = open_store
        self.reader = reader
        self.poll = poll
        self.damaged_retry = damaged_retry
        self.leadership = leadership
        self.standby_poll = standby_poll
        self.recheck = recheck
        self._checked = 0.0
        #: Batches this thread applied (0 for a runner that only stood by).
        self.batches = 0
        self.stopping = threading.Event()
        self.nudged = threading.Event()
        self.failures = 0
        #: The damaged event the views stopped before (None: not stopped).
        self.damaged: DamagedEvent | None = None
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> RunnerThread:
        self.thread.start()
        return self

    def nudge(self) -> None:
        """Something was written: look at the log now rather than at the next poll."""
        self.nudged.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.nudged.set()
        self.thread.join(timeout)

    def _leads(self) -> bool:
        """Whether this thread holds the duty (always, without one); asks the lock."""
        if self.leadership is None:
            return True
        self._checked = time.monotonic()
        return self.leadership.hold()

    def _still_leads(self) -> bool:
        """As :meth:`_leads`, asking the lock at most every ``recheck`` seconds."""
        if self.leadership is None or time.monotonic() - self._checked < self.recheck:
            return True
        return self._leads()

    def _loop(self) -> None:
        try:
            self._follow()
        finally:
            if self.leadership is not None:
                self.leadership.release()

    def _follow(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            if not self._leads():  # standing by (the duty logs the change)
                self.stopping.wait(self.standby_poll)
                continue
            store: ViewStore | None = None
            try:
                store = self.open_store()
                runner = Runner(store, self.reader)
                runner.guard = self._leads
                while not self.stopping.is_set():
                    if not self._still_leads():
                        raise NotLeader("the projections duty is gone")
                    if runner.run_once() == 0:
                        self.nudged.wait(self.poll)
                        self.nudged.clear()
                    else:
                        self.batches += 1
                    backoff = 0.1
                    self.damaged = None
            except NotLeader:  # stopped at once; a standby may take over before it looks again
                self.stopping.wait(self.standby_poll)
            except DamagedEvent as exc:
                self.damaged = exc
                log.error(
                    "projection runner stopped before a damaged event (%s): %s; looking again "
                    "in %.0f s",
                    exc.place(),
                    exc.reason,
                    self.damaged_retry,
                )
                self.stopping.wait(self.damaged_retry)
            except Exception:
                self.failures += 1
                log.exception("projection runner failed; restarting in %.1f s", backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if store is not None:
                    try:
                        store.close()
                    except Exception:
                        log.debug("closing the view store failed", exc_info=True)

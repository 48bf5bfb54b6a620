"""As-of replays within a budget, shared by every process that reads them.

A replay is a whole set of views rebuilt from the events recorded up to a moment, in a store
of its own (a SQLite file under ``<data dir>/asof``, a PostgreSQL schema ``<schema>_asof_...``).
Every process using the same views (API replicas, ``jiayi replay``) shares them through one
catalogue table in the live views' store, :data:`CATALOGUE`: which store holds which moment,
whether it is built yet, its size, when it was last used, how many reads are in it now. The
catalogue is only changed under its lock (PostgreSQL ``LOCK TABLE ... IN EXCLUSIVE MODE``,
SQLite ``BEGIN IMMEDIATE``), so:

- *One build per moment.* The first process to ask claims the moment (state ``building``,
  kept alive by a heartbeat); the others wait for it. A build not heard of for
  :attr:`Budget.stale` seconds (its process died) is claimed again, its half-built store
  dropped.
- *A budget.* After each build and each read, the least recently used stores are deleted
  while there are more than :attr:`Budget.max_stores` or they hold more than
  :attr:`Budget.max_bytes` together. A store with a read in progress (in any process) is
  never deleted; a read's claim lapses after :attr:`Budget.lease` seconds, so a process that
  died while reading does not keep a store for ever.
- *Names are never reused.* Each build gets a new name (moment + a random generation), so a
  store being dropped and one being built never collide; stores of these views that the
  catalogue does not list (left by a crash, or by versions before the catalogue) are swept
  after each build.

Per process (:class:`Replays`), at most :attr:`Budget.builds` builds run at once, and at most
:attr:`Budget.queue` more requests wait for one; beyond that a request is refused at once
(:class:`ReplaysBusy`: the API's 503 ``as-of-busy`` with Retry-After) instead of holding a
worker thread that an ordinary read needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from projections.location import Location
from projections.runner import shaped_as_now
from projections.store import ViewStore

log = logging.getLogger(__name__)

#: The catalogue of replay stores, beside the live views.
CATALOGUE = "asof_replays"
MIB = 1024 * 1024
BUILDING, READY = "building", "ready"

#: Builds the views as of a moment (UTC text) into a store (a new, empty place).
Builder = Callable[[str, Location], None]


class ReplaysBusy(Exception):
    """More as-of replays are waiting to be built in this process than it takes: retry."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "too many views as of other moments are being built; retry in a few seconds"
        )
        self.retry_after = retry_after


class Missing(Exception):
    """A store the catalogue lists as built is not there (deleted by hand), or holds views of
    another shape (built by an older version of jiayi)."""


@dataclass(frozen=True)
class Budget:
    """How many replay stores may exist and how big, and how many are built at once."""

    #: Replay stores kept (all processes together).
    max_stores: int = 32
    #: Bytes they may hold together (SQLite files; PostgreSQL tables with their indexes).
    max_bytes: int = 512 * MIB
    #: Builds running at once in one process.
    builds: int = 1
    #: Requests of one process waiting for a build beyond those running; more are refused.
    queue: int = 4
    #: Longest a read protects its store (a reader that died stops protecting it then).
    lease: float = 300.0
    #: How often a build tells the catalogue it is alive ...
    heartbeat: float = 2.0
    #: ... and after how long without news it is taken to have died.
    stale: float = 30.0
    #: Seconds a refused request is told to wait (Retry-After).
    retry_after: int = 5


@dataclass(frozen=True)
class Entry:
    moment: str
    place: str
    state: str
    bytes: int
    last_used: float
    users: int
    lease_until: float


@dataclass(frozen=True)
class Ready:
    """A read of the moment's store was taken (release it)."""

    place: str


@dataclass(frozen=True)
class Building:
    """Someone (this process or another) is building the moment's store."""


@dataclass(frozen=True)
class Claimed:
    """This caller builds the moment's store at ``place``; ``stale``: a dead build's place."""

    place: str
    stale: str | None


def ensure_catalogue(store: ViewStore) -> None:
    """The catalogue table (concurrent creators take turns on PostgreSQL: its ``IF NOT
    EXISTS`` is not safe against another session creating the same table)."""
    with store.transaction():
        if store.postgres:
            store.execute(
                "SELECT pg_advisory_xact_lock(hashtext(?))",
                [f"jiayi-ddl:{store.schema or 'public'}"],
            )
        store.execute(
            f"CREATE TABLE IF NOT EXISTS {CATALOGUE} (moment TEXT PRIMARY KEY, place TEXT NOT "
            "NULL, state TEXT NOT NULL, bytes BIGINT NOT NULL, last_used DOUBLE PRECISION NOT "
            "NULL, users BIGINT NOT NULL, lease_until DOUBLE PRECISION NOT NULL)"
        )


class Catalogue:
    """The catalogue of one set of views' replay stores (its own connection, opened on first
    use; times are wall-clock seconds, shared by the processes)."""

    def __init__(self, location: Location, budget: Budget) -> None:
        self.location = location
        self.budget = budget
        self._store: ViewStore | None = None
        self._opening = threading.Lock()

    def close(self) -> None:
        with self._opening:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _db(self) -> ViewStore:
        with self._opening:
            if self._store is None:
                store = self.location.open()
                try:
                    ensure_catalogue(store)
                except BaseException:
                    store.close()
                    raise
                self._store = store
            return self._store

    @contextmanager
    def _locked(self) -> Iterator[ViewStore]:
        db = self._db()
        try:
            with db.transaction():
                if db.postgres:
                    db.execute(f"LOCK TABLE {CATALOGUE} IN EXCLUSIVE MODE")
                yield db
        except Exception:
            self._forget_if_broken(db)
            raise

    def _forget_if_broken(self, db: ViewStore) -> None:
        """A connection the database dropped (it restarted) is replaced on next use."""
        if getattr(db.conn, "broken", False) or getattr(db.conn, "closed", False):
            with self._opening:
                if self._store is db:
                    self._store = None
            try:
                db.close()
            except Exception:
                log.debug("closing a broken catalogue connection failed", exc_info=True)

    # --- reading it ---------------------------------------------------------------------

    def entries(self, db: ViewStore | None = None, moment: str | None = None) -> list[Entry]:
        """What the catalogue lists (about ``moment`` only, when given)."""
        where, params = ("WHERE moment = ?", [moment]) if moment is not None else ("", [])
        rows = (db or self._db()).rows(
            f"SELECT moment, place, state, bytes, last_used, users, lease_until FROM {CATALOGUE} "
            + where,
            params,
        )
        return [
            Entry(
                r["moment"],
                r["place"],
                r["state"],
                int(r["bytes"]),
                float(r["last_used"]),
                int(r["users"]),
                float(r["lease_until"]),
            )
            for r in rows
        ]

    # --- changing it (each under the lock) ----------------------------------------------

    def acquire(self, moment: str, claim: bool) -> Ready | Building | Claimed | None:
        """A read of ``moment``'s store when it is built; :class:`Building` when someone is
        building it; else, with ``claim``, the claim to build it (else None)."""
        now = time.time()
        with self._locked() as db:
            listed = self.entries(db, moment)
            found = listed[0] if listed else None
            if found is not None and found.state == READY:
                db.execute(
                    f"UPDATE {CATALOGUE} SET users = users + 1, last_used = ?, lease_until = ? "
                    "WHERE moment = ?",
                    [now, now + self.budget.lease, moment],
                )
                return Ready(found.place)
            if found is not None and found.lease_until > now:
                return Building()
            if not claim:
                return None
            place = self.location.replay_name(moment)
            values = [place, BUILDING, 0, now, 0, now + self.budget.stale, moment]
            if found is None:
                db.execute(
                    f"INSERT INTO {CATALOGUE} (place, state, bytes, last_used, users, "
                    "lease_until, moment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            else:  # a build that died: its place is dropped, the moment built again
                db.execute(
                    f"UPDATE {CATALOGUE} SET place = ?, state = ?, bytes = ?, last_used = ?, "
                    "users = ?, lease_until = ? WHERE moment = ?",
                    values,
                )
            return Claimed(place, found.place if found is not None else None)

    def alive(self, moment: str, place: str) -> bool:
        """A build's heartbeat; False when its claim was taken over (it was thought dead)."""
        with self._locked() as db:
            return (
                db.execute(
                    f"UPDATE {CATALOGUE} SET lease_until = ? WHERE moment = ? AND place = ? "
                    "AND state = ?",
                    [time.time() + self.budget.stale, moment, place, BUILDING],
                )
                > 0
            )

    def finish(self, moment: str, place: str, size: int) -> tuple[bool, list[str]]:
        """The build of ``place`` is complete: it becomes the moment's store, with a read
        taken for the builder. Returns whether the claim still held, and the places to drop
        (over the budget, or not in the catalogue)."""
        now = time.time()
        with self._locked() as db:
            held = db.execute(
                f"UPDATE {CATALOGUE} SET state = ?, bytes = ?, last_used = ?, users = users + 1, "
                "lease_until = ? WHERE moment = ? AND place = ? AND state = ?",
                [READY, size, now, now + self.budget.lease, moment, place, BUILDING],
            )
            victims = self._over_budget(db, now)
            listed = {e.place for e in self.entries(db)}
            orphans = [p for p in self.places(db) if p not in listed and p != place]
            return held > 0, victims + orphans + ([] if held else [place])

    def fail(self, moment: str, place: str) -> None:
        """A build that failed: its claim is given up (the next request builds again)."""
        with self._locked() as db:
            db.execute(f"DELETE FROM {CATALOGUE} WHERE moment = ? AND place = ?", [moment, place])

    def release(self, moment: str, place: str) -> list[str]:
        """A read of ``place`` is over; returns the places to drop (over the budget)."""
        now = time.time()
        with self._locked() as db:
            db.execute(
                f"UPDATE {CATALOGUE} SET users = CASE WHEN users > 0 THEN users - 1 ELSE 0 END "
                "WHERE moment = ? AND place = ?",
                [moment, place],
            )
            return self._over_budget(db, now)

    def _over_budget(self, db: ViewStore, now: float) -> list[str]:
        """Takes out of the catalogue the least recently used stores nobody reads while the
        stores are over the budget, and builds that died; returns their places."""
        entries = self.entries(db)
        dead = [e for e in entries if e.state == BUILDING and e.lease_until <= now]
        kept = [e for e in entries if e not in dead]
        count, total = len(kept), sum(e.bytes for e in kept)
        idle = sorted(
            (e for e in kept if e.state == READY and (e.users == 0 or e.lease_until <= now)),
            key=lambda e: e.last_used,
        )
        victims = list(dead)
        for e in idle:
            if count <= self.budget.max_stores and total <= self.budget.max_bytes:
                break
            victims.append(e)
            count, total = count - 1, total - e.bytes
        for e in victims:
            db.execute(
                f"DELETE FROM {CATALOGUE} WHERE moment = ? AND place = ?", [e.moment, e.place]
            )
        if count > self.budget.max_stores or total > self.budget.max_bytes:
            log.info(
                "as-of replays over budget (%d stores, %d bytes): the rest are being read",
                count,
                total,
            )
        return [e.place for e in victims]

    # --- the stores themselves ----------------------------------------------------------

    def places(self, db: ViewStore | None = None) -> list[str]:
        """Every replay store of these views that exists (listed or not)."""
        prefix = self.location.replay_prefix()
        if self.location.postgres_params is not None:
            rows = (db or self._db()).rows(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, ?)", [prefix]
            )
            return sorted(r["nspname"] for r in rows)
        folder = self.location.replay_folder
        if not folder.is_dir():
            return []
        names = {p.name.split(".sqlite3")[0] + ".sqlite3" for p in folder.glob(f"{prefix}*")}
        return sorted(names)

    def size(self, place: str) -> int:
        """Bytes a replay store holds on disk."""
        if self.location.postgres_params is not None:
            found = self._db().one(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS n FROM pg_class c "
                "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = ? "
                "AND c.relkind = 'r'",
                [place],
            )
            return int(found["n"]) if found else 0
        path = self.location.replay(place).sqlite_path
        assert path is not None
        files = [path, path.with_name(path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())

    def drop(self, places: list[str]) -> None:
        """Delete replay stores (taken out of the catalogue first: nobody reads them)."""
        for place in places:
            try:
                if self.location.postgres_params is not None:
                    from psycopg import sql

                    with self._db().lock:
                        self._db().conn.execute(
                            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                                sql.Identifier(place)
                            )
                        )
                    continue
                path = self.location.replay(place).sqlite_path
                assert path is not None
                for suffix in ("", "-wal", "-shm", "-journal"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            except Exception:  # the next build's sweep finds it again
                log.warning("could not delete the as-of replay %s", place, exc_info=True)


class Replays:
    """One process's way to the replay stores: a read of a moment's views
    (:meth:`use`), built first when no process has (once, within :class:`Budget`), with
    up to ``keep_open`` stores' connections kept for the next read."""

    def __init__(
        self, location: Location, builder: Builder, budget: Budget, keep_open: int = 8
    ) -> None:
        self.location = location
        self.builder = builder
        self.budget = budget
        self.keep_open = keep_open
        self.catalogue = Catalogue(location, budget)
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(budget.builds)
        self._waiting = 0
        self._building: dict[str, threading.Event] = {}
        self._open: OrderedDict[str, ViewStore] = OrderedDict()
        self._reading: dict[str, int] = {}
        self._running = 0
        #: The most builds this process has run at once (never above ``budget.builds``).
        self.most_at_once = 0

    def close(self) -> None:
        stop = getattr(self.builder, "close", None)
        if stop is not None:  # builds in child processes (jiayi.replay_worker)
            stop()
        with self._lock:
            stores, self._open = list(self._open.values()), OrderedDict()
        for store in stores:
            _close(store)
        self.catalogue.close()

    @contextmanager
    def use(self, moment: str) -> Iterator[ViewStore]:
        """The views as of ``moment`` (UTC text), held for the block: not deleted meanwhile."""
        place = self._acquire(moment)
        try:
            store = self._handle(place)
        except Missing:  # listed, but deleted by hand: built again
            self._release(moment, place)
            self.catalogue.fail(moment, place)
            self._drop([place])
            place = self._acquire(moment)
            try:
                store = self._handle(place)
            except BaseException:
                self._release(moment, place)
                raise
        except BaseException:
            self._release(moment, place)
            raise
        try:
            yield store
        finally:
            with self._lock:
                self._reading[place] -= 1
                if not self._reading[place]:
                    del self._reading[place]
                self._trim()
            self._release(moment, place)

    # --- a read -------------------------------------------------------------------------

    def _acquire(self, moment: str) -> str:
        found = self.catalogue.acquire(moment, claim=False)
        if isinstance(found, Ready):
            return found.place
        with self._lock:
            if self._waiting >= self.budget.builds + self.budget.queue:
                raise ReplaysBusy(self.budget.retry_after)
            self._waiting += 1
        try:
            while True:
                if isinstance(found, Ready):
                    return found.place
                if isinstance(found, Building):
                    self._wait_for(moment)
                    found = self.catalogue.acquire(moment, claim=False)
                    continue
                with self._slots:  # absent: build it, when this process may build one more
                    found = self.catalogue.acquire(moment, claim=True)
                    if isinstance(found, Claimed):
                        place = self._build(moment, found)
                        if place is not None:
                            return place
                        found = None  # the claim was taken over meanwhile: ask again
        finally:
            with self._lock:
                self._waiting -= 1

    def _wait_for(self, moment: str) -> None:
        with self._lock:
            here = self._building.get(moment)
        if here is not None:  # this process builds it: woken when done
            here.wait(self.budget.heartbeat)
        else:  # another process does: ask the catalogue again shortly
            time.sleep(0.1)

    def _build(self, moment: str, claim: Claimed) -> str | None:
        if claim.stale is not None:
            self.catalogue.drop([claim.stale])
        done, stop = threading.Event(), threading.Event()
        with self._lock:
            self._building[moment] = done
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        beat = threading.Thread(
            target=self._heartbeat, args=(moment, claim.place, stop), daemon=True
        )
        beat.start()
        try:
            try:
                began = time.perf_counter()
                self.builder(moment, self.location.replay(claim.place))
                size = self.catalogue.size(claim.place)
            finally:
                stop.set()
                beat.join()
            held, drop = self.catalogue.finish(moment, claim.place, size)
            log.info(
                "views as of %s built in %.1f s (%d bytes)",
                moment,
                time.perf_counter() - began,
                size,
            )
        except BaseException:
            try:
                self.catalogue.fail(moment, claim.place)
                self.catalogue.drop([claim.place])
            except Exception:
                log.warning("could not give up a failed as-of build", exc_info=True)
            raise
        finally:
            with self._lock:
                self._running -= 1
                self._building.pop(moment, None)
            done.set()
        self._drop(drop)
        return claim.place if held else None

    def _heartbeat(self, moment: str, place: str, stop: threading.Event) -> None:
        while not stop.wait(self.budget.heartbeat):
            try:
                self.catalogue.alive(moment, place)
            except Exception:
                log.warning("an as-of build's heartbeat failed", exc_info=True)

    def _release(self, moment: str, place: str) -> None:
        try:
            drop = self.catalogue.release(moment, place)
        except Exception:  # the database away: the read's lease lapses by itself
            log.warning("could not release a read of the views as of %s", moment, exc_info=True)
            return
        self._drop(drop)

    def _drop(self, places: list[str]) -> None:
        if not places:
            return
        with self._lock:
            handles = [self._open.pop(p) for p in places if p in self._open]
        for store in handles:
            _close(store)
        self.catalogue.drop(places)

    # --- connections kept open ----------------------------------------------------------

    def _handle(self, place: str) -> ViewStore:
        with self._lock:
            self._reading[place] = self._reading.get(place, 0) + 1
            store = self._open.get(place)
            if store is not None:
                self._open.move_to_end(place)
                return store
        try:
            opened = self.location.replay(place).open()
            try:
                complete = bool(opened.positions()) and shaped_as_now(opened)
            except Exception as exc:
                if not _absent(exc):  # a passing error (the connection): not a missing store
                    _close(opened)
                    raise
                complete = False
            if not complete:
                # absent, or made by an older version with views of another shape: built again
                _close(opened)
                raise Missing(place)
        except BaseException:
            with self._lock:
                self._reading[place] -= 1
                if not self._reading[place]:
                    del self._reading[place]
            raise
        with self._lock:
            store = self._open.setdefault(place, opened)
            self._open.move_to_end(place)
        if store is not opened:
            _close(opened)
        return store

    def _trim(self) -> None:
        """Closes the least recently used connections beyond ``keep_open`` (not in use)."""
        idle = [p for p in self._open if p not in self._reading]
        while len(self._open) > self.keep_open and idle:
            _close(self._open.pop(idle.pop(0)))


def _close(store: ViewStore) -> None:
    try:
        store.close()
    except Exception:  # already gone (database restarted): nothing left to free
        log.debug("closing a replay's store failed", exc_info=True)


def in_process(reader: Any, progress: Callable[[int], None] | None = None) -> Builder:
    """A builder running in the calling thread (``jiayi replay``, tests): ``reader`` is the
    :class:`projections.events.LogReader` of the log."""
    from projections.runner import rebuild

    def build(moment: str, place: Location) -> None:
        store = place.open()
        try:
            # not pacing the collector: this may run in a thread of a process serving others
            rebuild(store, reader, progress=progress, as_of=moment, pace_gc=False)
        finally:
            store.close()

    return build


def _absent(exc: BaseException) -> bool:
    """Whether reading a replay store's positions failed because its tables are not there
    (deleted by hand), rather than for a passing reason (a lost connection)."""
    import sqlite3

    from psycopg import errors

    if isinstance(exc, errors.UndefinedTable | errors.InvalidSchemaName):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)

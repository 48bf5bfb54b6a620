"""The read access log: who read which patient's data, when, and how many rows.

**One mechanism.** Every read of patient data (API queries, pages, exports) goes through a
method of :class:`projections.views.ViewQueries`, and each of them is declared with
:func:`reads`: after the query, the rows it returns are counted per patient and one record per
patient is queued, against the reader its :class:`~projections.queries.Scope` names (the API
and the pages build every scope from the caller's token). A route cannot forget to record, and
a query method that does not declare what it reads fails ``tests/unit/test_access_log.py``.
A read that returns nothing (absent, outside the scope) records nothing.

**Off the request path.** :meth:`AccessLog.record` only appends to a queue in memory; a writer
thread writes the queue every ``interval`` seconds (or as soon as ``batch`` records wait), in
one transaction per batch. :meth:`AccessLog.close` (a clean stop: the API's lifespan, the
process's end) writes everything still queued.

**Append-only and chained like the event log** (:mod:`eventstore.chain`): table
``access_log`` beside the events (same SQLite file / PostgreSQL schema), written only by
:func:`append`; there is no update or delete path. Each row has a digest of its fields and a
link to the row before::

    digest(r) = SHA-256("jiayi.access.v1" 0x00 | at | staff_id | org_id | role | district
                        | patient_id | resource (each: 0x00 for none, else 0x01, length (4),
                        UTF-8) | rows (8))
    hash(p)   = link(hash(p - 1), p, digest(row at p))       (hash(0) = GENESIS)

Positions are given under a lock held by the writing transaction (PostgreSQL: the table in
EXCLUSIVE mode; SQLite: ``BEGIN IMMEDIATE``), so several processes append one chain in position
order. :func:`verify_access_log` walks it and names the rows that are not as written.
"""

from __future__ import annotations

import atexit
import csv
import functools
import inspect
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from eventstore.chain import GENESIS, link
from projections.queries import Reader
from projections.store import ViewStore

if TYPE_CHECKING:
    from jiayi.settings import Settings

log = logging.getLogger(__name__)

TABLE = "access_log"
COLUMNS = "position, at, staff_id, org_id, role, district, patient_id, resource, rows, digest, hash"
_RECORD = b"jiayi.access.v1\x00"

#: What a read without a named reader is recorded as (no API route or page makes one).
UNATTRIBUTED = Reader(staff_id="", role="unattributed")


def ddl(postgres: bool) -> list[str]:
    binary = "BYTEA" if postgres else "BLOB"
    return [
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            position BIGINT PRIMARY KEY,
            at TEXT NOT NULL,
            staff_id TEXT NOT NULL,
            org_id TEXT,
            role TEXT NOT NULL,
            district TEXT,
            patient_id TEXT NOT NULL,
            resource TEXT NOT NULL,
            rows BIGINT NOT NULL,
            digest {binary} NOT NULL,
            hash {binary} NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_patient_ix ON {TABLE} (patient_id, position)",
    ]


def ensure_table(store: ViewStore) -> None:
    """Create the access log's table if missing (on PostgreSQL, call it under
    :func:`jiayi.bootstrap.ddl_lock`)."""
    for statement in ddl(store.postgres):
        store.execute(statement)


# --- records and their chain -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One read of one patient's data: who, what, when and how many rows."""

    at: str
    staff_id: str
    org_id: str | None
    role: str
    district: str | None
    patient_id: str
    resource: str
    rows: int


def _text(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode("utf-8", "surrogatepass")
    return b"\x01" + len(data).to_bytes(4, "big") + data


def record_digest(r: AccessRecord) -> bytes:
    """The digest of a record's fields (see the module docstring); not of its position."""
    return sha256(
        b"".join(
            (
                _RECORD,
                _text(r.at),
                _text(r.staff_id),
                _text(r.org_id),
                _text(r.role),
                _text(r.district),
                _text(r.patient_id),
                _text(r.resource),
                r.rows.to_bytes(8, "big", signed=True),
            )
        )
    ).digest()


def append(store: ViewStore, records: Sequence[AccessRecord]) -> int:
    """Append ``records`` to the chain in one transaction, under the table's write lock;
    returns the last position written (0 when there was nothing to write and the log is
    empty). The only statement that writes the access log."""
    if not records:
        return 0
    if store.postgres:
        return _append_postgres(store, records)
    with store.transaction():  # BEGIN IMMEDIATE: the file's write lock, taken first
        head = store.one(f"SELECT position, hash FROM {TABLE} ORDER BY position DESC LIMIT 1")
        rows = _chained(head, records)
        store.executemany(f"INSERT INTO {TABLE} ({COLUMNS}) VALUES ({_MARKS})", rows)
    return int(rows[-1][0])


_MARKS = ", ".join("?" for _ in COLUMNS.split(", "))
#: One round trip for the lock and the head; one statement for the rows (a column an array).
_LOCK_AND_HEAD = (
    f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE; "
    f"SELECT position, hash FROM {TABLE} ORDER BY position DESC LIMIT 1"
)
_INSERT_ARRAYS = (
    f"INSERT INTO {TABLE} ({COLUMNS}) SELECT * FROM unnest(%s::bigint[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
    "%s::bytea[], %s::bytea[])"
)


def _append_postgres(store: ViewStore, records: Sequence[AccessRecord]) -> int:
    with store.lock, store.conn.transaction(), store.conn.cursor() as cur:
        # other processes append too: one at a time, so links follow positions
        cur.execute(_LOCK_AND_HEAD)
        while cur.description is None and cur.nextset():
            pass
        found = cur.fetchone()
        head = {"position": found[0], "hash": found[1]} if found else None
        rows = _chained(head, records)
        cur.execute(_INSERT_ARRAYS, [list(column) for column in zip(*rows, strict=True)])
    return int(rows[-1][0])


def _chained(
    head: Mapping[str, Any] | None, records: Sequence[AccessRecord]
) -> list[tuple[Any, ...]]:
    """The rows of ``records`` with positions, digests and links after ``head``."""
    position, previous = (int(head["position"]), bytes(head["hash"])) if head else (0, GENESIS)
    rows = []
    for r in records:
        position += 1
        digest = record_digest(r)
        previous = link(previous, position, digest)
        rows.append(
            (
                position, r.at, r.staff_id, r.org_id, r.role, r.district, r.patient_id,
                r.resource, r.rows, digest, previous,
            )
        )  # fmt: skip
    return rows


# --- the queue and its writer ----------------------------------------------------------------


class AccessLog:
    """Records reads without I/O; a writer thread appends them in batches.

    ``open_store`` opens the writer's own connection (reopened after a failure). Records that
    could not be written stay queued, in order, and are tried again; beyond ``limit`` queued
    records (the database unreachable for long) new ones are dropped and counted in
    :attr:`dropped`, with an error in the log."""

    def __init__(
        self,
        open_store: Callable[[], ViewStore],
        *,
        interval: float = 0.2,
        batch: int = 500,
        limit: int = 1_000_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.open_store = open_store
        self.interval = interval
        self.batch = batch
        self.limit = limit
        self.clock = clock
        self.dropped = 0
        #: Plain tuples of AccessRecord's fields: the collector untracks a tuple of strings and
        #: numbers, so records waiting here do not pile up in its oldest generation (which
        #: would bring on full collections, pauses of tens of ms in a busy API process).
        self._queue: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()  # the queue
        self._writing = threading.Lock()  # one writer at a time (the thread, flush, close)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._store: ViewStore | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="jiayi-access-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def record(self, reader: Reader | None, resource: str, counts: Mapping[str, int]) -> None:
        """Queue one record per patient of ``counts`` (patient id -> rows about them)."""
        if not counts:
            return
        who = reader or UNATTRIBUTED
        at = self.clock().isoformat(timespec="microseconds")
        org = str(who.org_id) if who.org_id is not None else None
        new = [
            (at, who.staff_id, org, who.role, who.district, pid, resource, n)
            for pid, n in counts.items()
        ]
        with self._lock:
            if len(self._queue) + len(new) > self.limit:
                self.dropped += len(new)
                dropped = self.dropped
            else:
                self._queue.extend(new)
                dropped = 0
                if len(self._queue) >= self.batch:
                    self._wake.set()
        if dropped:
            log.error("access log: queue full, %d records dropped so far", dropped)

    def flush(self) -> int:
        """Write everything queued now (batches of ``batch``, one transaction each); returns
        how many records were written. Raises when the database refuses (they stay queued)."""
        written = 0
        with self._writing:
            while True:
                with self._lock:
                    chunk = self._queue[: self.batch]
                if not chunk:
                    return written
                try:
                    if self._store is None:
                        self._store = self.open_store()
                    append(self._store, [AccessRecord(*fields) for fields in chunk])
                except BaseException:
                    self._drop_store()
                    raise
                with self._lock:  # only this writer removes, from the front
                    del self._queue[: len(chunk)]
                written += len(chunk)

    def close(self) -> None:
        """Stop the writer and write everything still queued (a clean stop loses nothing)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=30)
        for attempt in range(3):
            try:
                self.flush()
                break
            except Exception:
                if attempt == 2:
                    log.exception("access log: %d records could not be written", self.pending)
                else:
                    time.sleep(0.5)
        self._drop_store()

    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            self._wake.wait(self.interval if not failures else min(5.0, 0.5 * 2**failures))
            self._wake.clear()
            try:
                self.flush()
                failures = 0
            except Exception as exc:
                failures = min(failures + 1, 4)
                log.warning(
                    "access log: writing failed (%s); %d records kept, retrying",
                    type(exc).__name__,
                    self.pending,
                )

    def _drop_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:
                log.debug("closing the access log's connection failed", exc_info=True)


# --- declaring what a query reads -----------------------------------------------------------


class Recording(Protocol):
    """What :func:`reads` needs of the object whose methods it wraps."""

    access_log: AccessLog | None

    def reveal(self, found: Any) -> Any:
        """The answer with the personal data it holds opened for the reader (tokens)."""


F = TypeVar("F", bound=Callable[..., Any])


def count_rows(found: Any, key: str) -> dict[str, int]:
    """Rows per patient in a query's result: every dict carrying ``key`` (a patient id) is one
    row about that patient; lists are walked (a dict's lists too: a worklist's sections, a
    quota's bookings), nested dicts are not (a registry entry's contract has an ``id`` of its
    own)."""
    counts: dict[str, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            pid = value.get(key)
            if isinstance(pid, str):
                counts[pid] = counts.get(pid, 0) + 1
            for inner in value.values():
                if isinstance(inner, list):
                    walk(inner)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, (dict, list)):
                    walk(item)

    walk(found)
    return counts


def reads(
    resource: str | None, *, subject: str | None = None, key: str = "patient_id"
) -> Callable[[F], F]:
    """Declare what a query method of :class:`projections.views.ViewQueries` reads; its
    answer leaves with the personal data it holds opened for the reader (``reveal``).

    ``resource``: the name recorded (``None``: the method returns no patient's data, e.g.
    aggregate counts; declared so, on purpose). The method's first parameter is the
    ``Scope``, whose reader is recorded. After the query, the rows of its result are counted
    per patient (:func:`count_rows` with ``key``) and one record per patient is queued;
    ``subject`` names the parameter holding the one patient the query is about, recorded
    even when it returns no rows (a timeline page past the end). A ``None`` result (absent,
    not visible) records nothing."""

    def wrap(method: F) -> F:
        if resource is None:

            @functools.wraps(method)
            def revealed(self: Recording, scope: Any, *args: Any, **kwargs: Any) -> Any:
                found = method(self, scope, *args, **kwargs)
                return None if found is None else self.reveal(found)

            revealed.__reads__ = None  # type: ignore[attr-defined]
            return revealed  # type: ignore[return-value]
        parameters = list(inspect.signature(method).parameters)
        index = parameters.index(subject) - 2 if subject is not None else -1  # self, scope

        @functools.wraps(method)
        def recorded(self: Recording, scope: Any, *args: Any, **kwargs: Any) -> Any:
            found = method(self, scope, *args, **kwargs)
            if found is None:
                return found
            # Personal data leaves the views as tokens only through here, opened for this
            # reader (eventstore.personal); every query method declares @reads.
            found = self.reveal(found)
            access_log = self.access_log
            if access_log is None:
                return found
            counts = count_rows(found, key)
            if subject is not None:
                about = kwargs[subject] if subject in kwargs else args[index]
                counts.setdefault(str(about), 0)
            access_log.record(scope.reader, resource, counts)
            return found

        recorded.__reads__ = resource  # type: ignore[attr-defined]
        return recorded  # type: ignore[return-value]

    return wrap


# --- reading it (auditors) -------------------------------------------------------------------

_ENTRY = (
    "SELECT a.position, a.at, a.staff_id, a.org_id, o.name AS org_name, a.role, a.district, "
    "a.patient_id, a.resource, a.rows FROM access_log a "
    "LEFT JOIN v_orgs o ON o.id = REPLACE(a.org_id, '-', '') WHERE a.patient_id = ?"
)


def entries(store: ViewStore, patient_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    """The records about ``patient_id`` (``str(UUID)``), newest first."""
    return store.rows(
        f"{_ENTRY} ORDER BY a.position DESC LIMIT ? OFFSET ?", (patient_id, limit, offset)
    )


def report(store: ViewStore, patient_id: str, now: datetime) -> dict[str, Any]:
    """A patient's access report: every record about them, oldest first, and per reader
    (staff, organisation, role) how many reads and rows, first and last."""
    found = store.rows(f"{_ENTRY} ORDER BY a.position", (patient_id,))
    readers: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in found:
        who = (r["staff_id"], r["org_id"], r["role"], r["district"])
        seen = readers.get(who)
        if seen is None:
            readers[who] = seen = {
                "staff_id": r["staff_id"],
                "org_id": r["org_id"],
                "org_name": r["org_name"],
                "role": r["role"],
                "district": r["district"],
                "reads": 0,
                "rows": 0,
                "first_at": r["at"],
                "last_at": r["at"],
                "resources": [],
            }
        seen["reads"] += 1
        seen["rows"] += int(r["rows"])
        seen["last_at"] = r["at"]
        if r["resource"] not in seen["resources"]:
            seen["resources"].append(r["resource"])
    return {
        "patient": patient_id,
        "generated_at": now.isoformat(timespec="seconds"),
        "reads": found,
        "readers": list(readers.values()),
    }


#: Columns of the report's CSV form, in order.
REPORT_CSV = ("at", "staff_id", "org_id", "org_name", "role", "district", "resource", "rows")


def report_csv(found: dict[str, Any]) -> str:
    """The report's reads as CSV (:data:`REPORT_CSV`), one line per read, oldest first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_CSV)
    for r in found["reads"]:
        writer.writerow([_cell(r[c]) for c in REPORT_CSV])
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text, never runs as a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# --- verifying the chain ---------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """A place where the access log is not as written.

    ``kind`` (the words of ``jiayi audit verify``): ``changed`` (the row's fields no longer
    match its digest), ``deleted`` (positions ``position`` to ``last`` are absent; the row
    after them no longer follows, which is not reported again), ``link`` (the row does not
    follow the row before it, with no gap to explain it: its digest or hash rewritten, or the
    row made up)."""

    position: int
    kind: Literal["changed", "deleted", "link"]
    last: int | None = None

    def __str__(self) -> str:
        if self.kind == "deleted":
            if self.last is not None and self.last != self.position:
                return f"access log: positions {self.position}-{self.last} deleted"
            return f"access log: position {self.position} deleted"
        if self.kind == "changed":
            return f"access log: position {self.position} changed (fields not as digested)"
        return f"access log: position {self.position} does not follow the row before"


@dataclass(frozen=True)
class AccessLogCheck:
    """What :func:`verify_access_log` found: rows read, the last position and link (to keep
    elsewhere: rows appended after a truncation are only caught against it), and the broken
    places in position order (empty: intact)."""

    rows: int
    last_position: int
    last_hash: bytes
    broken: tuple[Broken, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.broken


def _walk(store: ViewStore, page: int) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        found = store.rows(
            f"SELECT {COLUMNS} FROM {TABLE} WHERE position > ? ORDER BY position LIMIT ?",
            (after, page),
        )
        yield from found
        if len(found) < page:
            return
        after = int(found[-1]["position"])


def verify_access_log(source: ViewStore | Settings, page: int = 10_000) -> AccessLogCheck:
    """Walk the access log in position order and check each row's digest against its fields
    and its link against the row before (positions start at 1 and have no gaps).

    ``source``: a store of the views (the access log lives beside them) or the deployment's
    ``Settings``. Reads only; never repairs. Cannot see rows removed from the end (compare
    :attr:`AccessLogCheck.last_hash` with one kept earlier)."""
    if isinstance(source, ViewStore):
        return _verify(source, page)
    from jiayi.bootstrap import view_location

    store = view_location(source).open()
    try:
        ensure_table(store)  # a deployment that never served a read has an empty log
        return _verify(store, page)
    finally:
        store.close()


def _verify(store: ViewStore, page: int) -> AccessLogCheck:
    broken: list[Broken] = []
    rows, position, previous = 0, 0, GENESIS
    for r in _walk(store, page):
        rows += 1
        at = int(r["position"])
        gap = at != position + 1
        if gap:
            broken.append(Broken(position + 1, "deleted", at - 1))
        digest, stored = bytes(r["digest"]), bytes(r["hash"])
        record = AccessRecord(
            r["at"],
            r["staff_id"],
            r["org_id"],
            r["role"],
            r["district"],
            r["patient_id"],
            r["resource"],
            int(r["rows"]),
        )
        if record_digest(record) != digest:
            broken.append(Broken(at, "changed"))
        if not gap and link(previous, at, digest) != stored:
            broken.append(Broken(at, "link"))
        position, previous = at, stored
    return AccessLogCheck(rows, position, previous, tuple(broken))

"""The recorders every process writes and reads the one log through (both stores).

They are the library's process recorders (events + tracking positions) with:

- two more columns in the events table, ``digest`` and ``hash``: the hash chain of
  ``eventstore.chain``, written by the statement that inserts the events, positions given by
  the recorder under the events table's lock (PostgreSQL) or the database's write lock
  (SQLite), so every write path (use cases, batches, the consumer's binary insert, bulk
  histories) is chained in position order. Every read (an aggregate's events, a page of the
  log) checks each row against its digest and raises
  :class:`~eventstore.errors.DamagedEvent` for a row that was changed, moved or inserted
  outside the application. Triggers count every UPDATE, DELETE or TRUNCATE of the events
  (``changed_outside``); the seal and verification tables live beside them.
- ``<app>_inbox (source, id)``: the CloudEvents already applied. Rows are inserted in the same
  transaction as the events a message caused and its partition offset, so a message is
  applied at most once even when a partner publishes it again under a new offset.

Selected for every application through ``APPLICATION_RECORDER_TOPIC``
(``jiayi.bootstrap.event_store_env``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteProcessRecorder
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from eventstore.chain import EVENT_PREFIX, GENESIS, event_digest, extend, link
from eventstore.errors import DamagedEvent

log = logging.getLogger("jiayi.eventstore")

NOT_CHAINED = "not in the hash chain (inserted outside the application)"
NOT_AS_CHAINED = "does not match its digest in the hash chain (changed or moved)"

#: (CloudEvent source, CloudEvent id)
MessageKey = tuple[str, str]


def checked(
    position: int | None,
    originator_id: UUID,
    version: int,
    topic: str,
    state: bytes,
    digest: bytes | None,
) -> None:
    """Raise DamagedEvent unless the row is the one the chain recorded at its place."""
    if digest is None:
        reason = NOT_CHAINED
    elif event_digest(originator_id, version, topic, state) != digest:
        reason = NOT_AS_CHAINED
    else:
        return
    raise DamagedEvent(
        originator_id=originator_id, version=version, topic=topic, position=position, reason=reason
    )


@dataclass(frozen=True)
class Tables:
    """The event store's tables (names within the deployment's schema / SQLite file)."""

    #: the events, each row with its link in the chain (columns digest and hash)
    events: str
    seals: str
    verifications: str
    #: the events table's column that is the position in the log
    position: str


def tables(postgres: bool, application: str = "carecoordination") -> Tables:
    if postgres:
        return Tables(
            events=f"{application}_events",
            seals=f"{application}_seals",
            verifications=f"{application}_verifications",
            position="notification_id",
        )
    return Tables("stored_events", "chain_seals", "chain_verifications", "rowid")


#: Seals of the chain's head (signed outside the database, see ``audit.seals``) and the
#: verifications made (``audit.verify``), created with the event store so every process has them.
_AUDIT_TABLES = (
    "CREATE TABLE IF NOT EXISTS {seals} (id {serial}, position bigint NOT NULL, "
    "hash {blob} NOT NULL, sealed_at text NOT NULL, key_id text NOT NULL, "
    "signature {blob} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {verifications} (id {serial}, started_at text NOT NULL, "
    "finished_at text, requested_by text NOT NULL, from_position bigint NOT NULL, "
    "to_position bigint, events bigint NOT NULL DEFAULT 0, ok integer, report text)",
)


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


class PostgresEventStore(PostgresProcessRecorder):
    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str | None = None,
    ) -> None:
        base = events_table_name.removesuffix("_events")
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=tracking_table_name or f"{base}_tracking",
        )
        #: the chain lives in the events' rows (columns digest and hash)
        self.chain_table_name = self.events_table_name
        schema = Identifier(self.datastore.schema)
        events = Identifier(self.events_table_name)
        self.inbox_table = Identifier(f"{base}_inbox")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0}.{1} (source text NOT NULL, id text NOT NULL, "
                "received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, id))"
            ).format(schema, self.inbox_table)
        )
        # the chain lives in the events' own rows: digest and hash (see eventstore.chain)
        self.sql_create_statements.append(
            SQL(
                "ALTER TABLE {0}.{1} ADD COLUMN IF NOT EXISTS digest bytea, "
                "ADD COLUMN IF NOT EXISTS hash bytea"
            ).format(schema, events)
        )
        names = tables(True, base)
        for statement in _AUDIT_TABLES:
            self.sql_create_statements.append(
                SQL(
                    statement.format(
                        seals="{0}.{1}",
                        verifications="{0}.{2}",
                        serial="bigserial PRIMARY KEY",
                        blob="bytea",
                    )
                ).format(schema, Identifier(names.seals), Identifier(names.verifications))
            )
        self._insert_inbox = SQL(
            "INSERT INTO {0}.{1} (source, id) SELECT * FROM unnest(%b::text[], %b::text[])"
        ).format(schema, self.inbox_table)
        self._select_inbox = SQL(
            "SELECT source, id FROM {0}.{1} WHERE (source, id) IN "
            "(SELECT * FROM unnest(%b::text[], %b::text[]))"
        ).format(schema, self.inbox_table)
        # under the table lock: the next position and the chain's head
        self._select_next = SQL(
            "SELECT (SELECT max(notification_id) FROM {0}.{1}) AS last, (SELECT hash FROM "
            "{0}.{1} WHERE hash IS NOT NULL ORDER BY notification_id DESC LIMIT 1) AS head"
        ).format(schema, events)
        self._set_sequence = SQL("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)")
        # the events with their positions, digests and hashes (32 + 32 bytes a link, in one
        # bytea: parameter arrays cost about 1.2 µs a value to send while the lock is held)
        self._insert_columns = SQL(
            "WITH x AS (SELECT %b::bytea AS links, %b::bigint AS first) "
            "INSERT INTO {0}.{1} (notification_id, originator_id, originator_version, topic, "
            "state, digest, hash) SELECT x.first + u.o - 1, u.i, u.v, u.t, u.s, "
            "substring(x.links FROM (u.o::int - 1) * 64 + 1 FOR 32), "
            "substring(x.links FROM (u.o::int - 1) * 64 + 33 FOR 32) "
            "FROM x, unnest(%b::{2}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "WITH ORDINALITY AS u(i, v, t, s, o) RETURNING notification_id"
        ).format(schema, events, Identifier(self.datastore.originator_id_type))
        self._select_head = SQL(
            "SELECT notification_id, hash FROM {0}.{1} WHERE hash IS NOT NULL "
            "ORDER BY notification_id DESC LIMIT 1"
        ).format(schema, events)
        self._update_links = SQL(
            "UPDATE {0}.{1} e SET digest = u.d, hash = u.h FROM unnest(%b::bigint[], "
            "%b::bytea[], %b::bytea[]) AS u(p, d, h) WHERE e.notification_id = u.p"
        ).format(schema, events)
        # every read takes each row's digest with it
        self._checked = SQL(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
            "e.digest FROM {0}.{1} e"
        ).format(schema, events)
        self._count_after = SQL(
            "SELECT count(*) AS count FROM {0}.{1} WHERE notification_id > %b"
        ).format(schema, events)
        self._exists = SQL("SELECT 1 FROM {0}.{1} WHERE originator_id = %b LIMIT 1").format(
            schema, events
        )
        self._select_many = self._checked + SQL(
            " WHERE e.originator_id = ANY(%b) ORDER BY e.originator_id, e.originator_version"
        )
        self._select_changes = SQL(
            "SELECT notification_id, originator_id, originator_version FROM {0}.{1} "
            "WHERE notification_id > %b AND NOT EXISTS (SELECT FROM unnest(%b::bigint[], "
            "%b::bigint[]) AS own(first, last) WHERE notification_id BETWEEN first AND last) "
            "ORDER BY notification_id"
        ).format(schema, events)
        # the first damaged event of each of some aggregates, the digests computed by the
        # database (as eventstore.chain does): nothing but the damaged rows comes back
        self._select_damaged = SQL(
            "SELECT DISTINCT ON (e.originator_id) e.notification_id, e.originator_id, "
            "e.originator_version, e.topic, e.digest IS NULL AS unchained "
            "FROM {0}.{1} e "
            "WHERE e.originator_id = ANY(%b) AND (e.digest IS NULL OR e.digest <> sha256("
            "%b::bytea || uuid_send(e.originator_id::uuid) || int8send(e.originator_version) "
            "|| int4send(length(convert_to(e.topic, 'UTF8'))) || convert_to(e.topic, 'UTF8') "
            "|| e.state)) ORDER BY e.originator_id, e.originator_version"
        ).format(schema, events)
        # a counter bumped by triggers on any UPDATE, DELETE or TRUNCATE of the events or the
        # chain (the application only inserts): what a process keeping aggregates in memory
        # looks at before it trusts them (``changed_outside``)
        alterations = Identifier(f"{base}_alterations")
        note = Identifier(f"{base}_note_alteration")
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {0}.{1} (id int PRIMARY KEY, n bigint NOT NULL)"
            ).format(schema, alterations),
            SQL("INSERT INTO {0}.{1} VALUES (1, 0) ON CONFLICT DO NOTHING").format(
                schema, alterations
            ),
            SQL(
                "CREATE OR REPLACE FUNCTION {0}.{1}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN UPDATE {0}.{2} SET n = n + 1 WHERE id = 1; RETURN NULL; END $$"
            ).format(schema, note, alterations),
        ]
        for table in (self.events_table_name,):
            self.sql_create_statements.append(
                SQL(
                    "CREATE OR REPLACE TRIGGER {0} AFTER UPDATE OR DELETE OR TRUNCATE ON {1}.{2} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION {1}.{3}()"
                ).format(Identifier(f"{table}_altered"), schema, Identifier(table), note)
            )
        self._select_alterations = SQL("SELECT n FROM {0}.{1} WHERE id = 1").format(
            schema, alterations
        )
        self._alterations_seen: int | None = None
        self._select_position = SQL(
            "SELECT notification_id FROM {0}.{1} WHERE originator_id = %b "
            "AND originator_version = %b"
        ).format(schema, events)
        self._chained_column = SQL(
            "SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s AND column_name = 'hash') AS found"
        )
        self._adopt_rows = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {0}.{1} ORDER BY notification_id"
        ).format(schema, events)
        self._qualified = f'"{self.datastore.schema}"."{self.events_table_name}"'

    # --- the chain, written with the events -------------------------------------------------

    def create_table(self) -> None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._chained_column, (self.datastore.schema, self.events_table_name))
            row = curs.fetchone()
            existed = bool(row and row["found"])
        super().create_table()
        if not existed:
            self._adopt()

    def _adopt(self) -> None:
        """Chain the events of a log recorded before the chain existed (an upgrade), once,
        when the chain's columns are added; a chain that exists is never recomputed here."""
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            curs.execute(self._select_head)
            if curs.fetchone() is not None:
                return
            with curs.connection.cursor(name="jiayi_adopt") as rows:
                rows.execute(self._adopt_rows)
                links = list(
                    extend(
                        GENESIS,
                        (
                            (
                                r["notification_id"],
                                r["originator_id"],
                                r["originator_version"],
                                r["topic"],
                                bytes(r["state"]),
                            )
                            for r in rows
                        ),
                    )
                )
            for i in range(0, len(links), 10_000):
                part = links[i : i + 10_000]
                curs.execute(
                    self._update_links,
                    ([k.position for k in part], [k.digest for k in part], [k.hash for k in part]),
                    binary=True,
                )
            if links:
                log.warning(
                    "hash chain started over %d events recorded before it (up to position %d)",
                    len(links),
                    links[-1].position,
                )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # what does not depend on the position is hashed before the table lock is taken
        kwargs["digests"] = [
            event_digest(_uuid(e.originator_id), e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        return super().insert_events(stored_events, **kwargs)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """Under the table lock (so positions are given, and links made, in commit order):
        the next position and the chain's head (one round trip), the links, then the events
        with their positions, digests and hashes in one statement, sent in binary (one typed
        array a column: psycopg quotes every field of a composite with regular expressions,
        which was a tenth of the consumer's time)."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self._select_next, prepare=True)
        row = curs.fetchone()
        first = int(row["last"] or 0) + 1
        previous = GENESIS if row["head"] is None else bytes(row["head"])
        digests: list[bytes] = kwargs.get("digests") or [
            event_digest(_uuid(e.originator_id), e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        links = bytearray()
        for position, digest in enumerate(digests, first):
            previous = link(previous, position, digest)
            links += digest
            links += previous
        curs.execute(self._set_sequence, (self._qualified, first + len(digests) - 1))
        curs.execute(
            self._insert_columns,
            (
                bytes(links),
                first,
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            binary=True,
        )

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        received: list[MessageKey] = kwargs.get("received") or []
        if received:  # one statement for the whole batch
            curs.execute(
                self._insert_inbox,
                ([k[0] for k in received], [k[1] for k in received]),
                binary=True,
            )

    # --- reads, checked against the chain ----------------------------------------------------

    def _checked_rows(
        self,
        statement: Composed,
        params: Sequence[Any],
        damaged: dict[UUID, DamagedEvent] | None = None,
    ) -> list[DictRow]:
        """The rows, each checked against the chain: DamagedEvent for the first that is not
        as recorded, or, with ``damaged``, every row of such an aggregate left out and its
        first damaged event put there."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(statement, params, binary=True)
            rows: list[DictRow] = curs.fetchall()
        found = False
        for r in rows:
            state = r["state"] = bytes(r["state"])
            digest = r["digest"]
            try:
                checked(
                    r["notification_id"],
                    r["originator_id"],
                    r["originator_version"],
                    r["topic"],
                    state,
                    None if digest is None else bytes(digest),
                )
            except DamagedEvent as exc:
                if damaged is None:
                    raise
                damaged.setdefault(exc.originator_id, exc)
                found = True
        if found:
            assert damaged is not None
            rows = [r for r in rows if r["originator_id"] not in damaged]
        return rows

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        statement = self._checked + SQL(" WHERE e.originator_id = %b")
        params: list[Any] = [originator_id]
        if gt is not None:
            params.append(gt)
            statement += SQL(" AND e.originator_version > %b")
        if lte is not None:
            params.append(lte)
            statement += SQL(" AND e.originator_version <= %b")
        statement += SQL(" ORDER BY e.originator_version") + SQL(" DESC" if desc else " ASC")
        if limit is not None:
            params.append(limit)
            statement += SQL(" LIMIT %b")
        return [
            StoredEvent(
                originator_id=r["originator_id"],
                originator_version=r["originator_version"],
                topic=r["topic"],
                state=r["state"],
            )
            for r in self._checked_rows(statement, params)
        ]

    def count_after(self, position: int) -> int:
        """How many events the log holds after ``position`` (none read)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._count_after, (position,), binary=True)
            row = curs.fetchone()
        return int(row["count"]) if row else 0

    def has_events(self, originator_id: UUID) -> bool:
        """Whether the aggregate has any event (no row read, so none checked)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._exists, (originator_id,), binary=True, prepare=True)
            return curs.fetchone() is not None

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        where: list[Composed | SQL] = []
        params: list[Any] = []
        if start is not None:
            where.append(
                SQL("e.notification_id >= %b" if inclusive_of_start else "e.notification_id > %b")
            )
            params.append(start)
        if stop is not None:
            where.append(SQL("e.notification_id <= %b"))
            params.append(stop)
        if topics:
            where.append(SQL("e.topic = ANY(%b)"))
            params.append(list(topics))
        statement = self._checked
        if where:
            statement += SQL(" WHERE ") + SQL(" AND ").join(where)
        statement += SQL(" ORDER BY e.notification_id LIMIT %b")
        params.append(limit)
        return [
            Notification(
                id=r["notification_id"],
                originator_id=r["originator_id"],
                originator_version=r["originator_version"],
                topic=r["topic"],
                state=r["state"],
            )
            for r in self._checked_rows(statement, params)
        ]

    def received(self, keys: Iterable[MessageKey]) -> set[MessageKey]:
        """Which of ``keys`` were applied already."""
        keys = list(keys)
        if not keys:
            return set()
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                self._select_inbox, ([k[0] for k in keys], [k[1] for k in keys]), binary=True
            )
            rows: list[DictRow] = curs.fetchall()
        return {(r["source"], r["id"]) for r in rows}

    def select_events_of(
        self, originator_ids: Iterable[UUID], damaged: dict[UUID, DamagedEvent] | None = None
    ) -> list[StoredEvent]:
        """Every event of the given aggregates in one query, by aggregate and version (each
        checked against the chain: DamagedEvent names the first that is not as recorded).
        With ``damaged``, an aggregate with a damaged event is left out instead and its first
        damaged event put there (the others are still read)."""
        ids = list(originator_ids)
        if not ids:
            return []
        return [
            StoredEvent(
                originator_id=r["originator_id"],
                originator_version=r["originator_version"],
                topic=r["topic"],
                state=r["state"],
            )
            for r in self._checked_rows(self._select_many, (ids,), damaged)
        ]

    def changed_outside(self) -> bool:
        """Whether rows of the events table were updated, deleted or truncated since
        the last call (the application only inserts them; triggers count every such
        statement, in the statement's own transaction). True on the first call."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_alterations)
            row = curs.fetchone()
        seen = int(row["n"]) if row else -1
        changed, self._alterations_seen = seen != self._alterations_seen, seen
        return changed

    def damaged_among(self, originator_ids: Iterable[UUID]) -> dict[UUID, DamagedEvent]:
        """The first damaged event of each of the given aggregates that has one, checked
        without reading their events: the database computes the digests (one query, only
        damaged rows come back). For aggregates kept in memory that are about to be used."""
        ids = list(originator_ids)
        if not ids:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_damaged, (ids, EVENT_PREFIX), binary=True)
            rows: list[DictRow] = curs.fetchall()
        return {
            _uuid(r["originator_id"]): DamagedEvent(
                originator_id=_uuid(r["originator_id"]),
                version=r["originator_version"],
                topic=r["topic"],
                position=r["notification_id"],
                reason=NOT_CHAINED if r["unchained"] else NOT_AS_CHAINED,
            )
            for r in rows
        }

    def position_of(self, originator_id: UUID, version: int) -> int | None:
        """The log position of one aggregate's event (to name a damaged one found without)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_position, (originator_id, version), binary=True)
            row = curs.fetchone()
        return None if row is None else int(row["notification_id"])

    def changes_since(
        self, position: int, own: Sequence[tuple[int, int]] = (), limit: int | None = None
    ) -> list[tuple[int, UUID, int]] | None:
        """(position, aggregate id, version) of each event after ``position``, leaving out the
        ranges of positions in ``own`` (batches the caller recorded itself); None when there
        are more than ``limit``."""
        query = self._select_changes if limit is None else self._select_changes + SQL(" LIMIT %b")
        params: tuple[Any, ...] = (position, [o[0] for o in own], [o[1] for o in own])
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(query, params if limit is None else (*params, limit + 1), binary=True)
            rows = curs.fetchall()
        if limit is not None and len(rows) > limit:
            return None
        return [(r["notification_id"], r["originator_id"], r["originator_version"]) for r in rows]


class SQLiteEventStore(SQLiteProcessRecorder):
    def __init__(
        self, datastore: SQLiteDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.chain_table_name = events_table_name
        self.create_table_statements.append(
            "CREATE TABLE IF NOT EXISTS inbox (source text NOT NULL, id text NOT NULL, "
            "PRIMARY KEY (source, id))"
        )
        names = tables(False)
        for statement in _AUDIT_TABLES:
            self.create_table_statements.append(
                statement.format(
                    seals=names.seals,
                    verifications=names.verifications,
                    serial="INTEGER PRIMARY KEY",
                    blob="BLOB",
                )
            )
        self._alterations_seen: int | None = None
        self.create_table_statements += [
            "CREATE TABLE IF NOT EXISTS chain_alterations (id INTEGER PRIMARY KEY, "
            "n INTEGER NOT NULL)",
            "INSERT OR IGNORE INTO chain_alterations VALUES (1, 0)",
        ] + [
            f"CREATE TRIGGER IF NOT EXISTS {events_table_name}_{what}d AFTER {what.upper()} "
            f"ON {events_table_name} "
            "BEGIN UPDATE chain_alterations SET n = n + 1 WHERE id = 1; END"
            for what in ("update", "delete")
        ]
        e = self.events_table_name
        self._checked = (
            f"SELECT e.rowid AS notification_id, e.originator_id, e.originator_version, e.topic, "
            f"e.state, e.digest FROM {e} e"
        )
        self._insert = (
            f"INSERT INTO {e} (rowid, originator_id, originator_version, topic, state, digest, "
            "hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )

    def _create_table(self, c: SQLiteCursor) -> None:
        """The library's tables, the chain's columns in the events' rows and, for a log
        recorded before the chain existed (an upgrade), its links, once."""
        super()._create_table(c)
        e = self.events_table_name
        c.execute(f"PRAGMA table_info({e})")
        if "hash" in {r[1] for r in c.fetchall()}:
            return
        c.execute(f"ALTER TABLE {e} ADD COLUMN digest BLOB")
        c.execute(f"ALTER TABLE {e} ADD COLUMN hash BLOB")
        c.execute(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {e} ORDER BY rowid"
        )
        links = list(
            extend(
                GENESIS,
                ((r[0], UUID(r[1]), r[2], r[3], bytes(r[4])) for r in c.fetchall()),
            )
        )
        if links:
            c.executemany(
                f"UPDATE {e} SET digest = ?, hash = ? WHERE rowid = ?",
                [(k.digest, k.hash, k.position) for k in links],
            )
            log.warning(
                "hash chain started over %d events recorded before it (up to position %d)",
                len(links),
                links[-1].position,
            )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The events with their positions, digests and hashes (under SQLite's write lock,
        so positions are given, and links made, in commit order), the tracking position and
        the inbox."""
        returning: list[int] = []
        if stored_events:
            e = self.events_table_name
            # take the write lock first (waiting for it as any write does): a read first would
            # hold a shared lock that SQLite refuses to upgrade while another writer is busy
            c.execute("UPDATE chain_alterations SET n = n WHERE 0")
            c.execute(
                f"SELECT (SELECT max(rowid) FROM {e}), (SELECT hash FROM {e} "
                "WHERE hash IS NOT NULL ORDER BY rowid DESC LIMIT 1)"
            )
            last, head = c.fetchone()
            first = (last or 0) + 1
            links = extend(
                GENESIS if head is None else bytes(head),
                (
                    (first + n, _uuid(s.originator_id), s.originator_version, s.topic, s.state)
                    for n, s in enumerate(stored_events)
                ),
            )
            rows = [
                (
                    k.position,
                    k.originator_id.hex,
                    k.originator_version,
                    k.topic,
                    s.state,
                    k.digest,
                    k.hash,
                )
                for k, s in zip(links, stored_events, strict=True)
            ]
            returning = [r[0] for r in rows]
            c.executemany(self._insert, rows)
        tracking = kwargs.get("tracking")
        if tracking is not None:
            self._insert_tracking(c, tracking)
        received: list[MessageKey] = kwargs.get("received") or []
        if received:
            c.executemany("INSERT INTO inbox (source, id) VALUES (?, ?)", received)
        return returning

    def _checked_rows(
        self, sql: str, params: Sequence[Any], damaged: dict[UUID, DamagedEvent] | None = None
    ) -> list[tuple[Any, ...]]:
        """As :meth:`PostgresEventStore._checked_rows`."""
        out: list[tuple[Any, ...]] = []
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            for r in c.fetchall():
                oid, state, digest = UUID(r[1]), bytes(r[4]), r[5]
                try:
                    checked(r[0], oid, r[2], r[3], state, None if digest is None else bytes(digest))
                except DamagedEvent as exc:
                    if damaged is None:
                        raise
                    damaged.setdefault(oid, exc)
                    continue
                out.append((r[0], oid, r[2], r[3], state))
        if damaged:
            out = [r for r in out if r[1] not in damaged]
        return out

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        sql = self._checked + " WHERE e.originator_id = ?"
        params: list[Any] = [
            originator_id.hex if isinstance(originator_id, UUID) else originator_id
        ]
        if gt is not None:
            sql += " AND e.originator_version > ?"
            params.append(gt)
        if lte is not None:
            sql += " AND e.originator_version <= ?"
            params.append(lte)
        sql += " ORDER BY e.originator_version" + (" DESC" if desc else " ASC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            StoredEvent(originator_id=r[1], originator_version=r[2], topic=r[3], state=r[4])
            for r in self._checked_rows(sql, params)
        ]

    def count_after(self, position: int) -> int:
        """How many events the log holds after ``position`` (none read)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT count(*) FROM {self.events_table_name} WHERE rowid > ?", (position,))
            row = c.fetchone()
        return int(row[0]) if row else 0

    def has_events(self, originator_id: UUID) -> bool:
        """Whether the aggregate has any event (no row read, so none checked)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT 1 FROM {self.events_table_name} WHERE originator_id = ? LIMIT 1",
                (originator_id.hex,),
            )
            return c.fetchone() is not None

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("e.rowid >= ?" if inclusive_of_start else "e.rowid > ?")
            params.append(start)
        if stop is not None:
            where.append("e.rowid <= ?")
            params.append(stop)
        if topics:
            where.append(f"e.topic IN ({', '.join('?' * len(topics))})")
            params.extend(topics)
        sql = self._checked
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.rowid LIMIT ?"
        params.append(limit)
        return [
            Notification(
                id=r[0], originator_id=r[1], originator_version=r[2], topic=r[3], state=r[4]
            )
            for r in self._checked_rows(sql, params)
        ]

    def received(self, keys: Iterable[MessageKey]) -> set[MessageKey]:
        found: set[MessageKey] = set()
        with self.datastore.transaction(commit=False) as c:
            for key in keys:
                c.execute("SELECT 1 FROM inbox WHERE source = ? AND id = ?", key)
                if c.fetchone():
                    found.add(key)
        return found

    def select_events_of(
        self, originator_ids: Iterable[UUID], damaged: dict[UUID, DamagedEvent] | None = None
    ) -> list[StoredEvent]:
        """As :meth:`PostgresEventStore.select_events_of` (one query an aggregate)."""
        if damaged is None:
            return [e for i in originator_ids for e in self.select_events(i)]
        sql = self._checked + " WHERE e.originator_id = ? ORDER BY e.originator_version"
        return [
            StoredEvent(originator_id=r[1], originator_version=r[2], topic=r[3], state=r[4])
            for i in originator_ids
            for r in self._checked_rows(sql, [i.hex], damaged)
        ]

    def changed_outside(self) -> bool:
        """As :meth:`PostgresEventStore.changed_outside` (row triggers here)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT n FROM chain_alterations WHERE id = 1")
            row = c.fetchone()
        seen = int(row[0]) if row else -1
        changed, self._alterations_seen = seen != self._alterations_seen, seen
        return changed

    def damaged_among(self, originator_ids: Iterable[UUID]) -> dict[UUID, DamagedEvent]:
        """As :meth:`PostgresEventStore.damaged_among`; the digests are computed here."""
        damaged: dict[UUID, DamagedEvent] = {}
        self.select_events_of(originator_ids, damaged)
        return damaged

    def position_of(self, originator_id: UUID, version: int) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT rowid FROM {self.events_table_name} "
                "WHERE originator_id = ? AND originator_version = ?",
                (originator_id.hex, version),
            )
            row = c.fetchone()
        return None if row is None else int(row[0])

    def changes_since(
        self, position: int, own: Sequence[tuple[int, int]] = (), limit: int | None = None
    ) -> list[tuple[int, UUID, int]] | None:
        found: list[tuple[int, UUID, int]] = []
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT rowid, originator_id, originator_version"
                f" FROM {self.events_table_name} WHERE rowid > ? ORDER BY rowid",
                (position,),
            )
            for r in c.fetchall():
                if any(first <= r["rowid"] <= last for first, last in own):
                    continue
                if limit is not None and len(found) == limit:
                    return None
                found.append((r["rowid"], UUID(r["originator_id"]), r["originator_version"]))
        return found


def recorder_topic(postgres: bool) -> str:
    cls = PostgresEventStore if postgres else SQLiteEventStore
    return f"{cls.__module__}:{cls.__qualname__}"

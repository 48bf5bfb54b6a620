"""The exchange's side of the event store: an inbox of received messages, bulk reads.

Both recorders are process recorders (events + tracking positions) with one more table,
``<app>_inbox (source, id)``: the CloudEvents already applied. Rows are inserted in the same
transaction as the events a message caused and its partition offset, so a message is applied
at most once even when a partner publishes it again under a new offset. Selected for the
consumer's and the relay's application through ``APPLICATION_RECORDER_TOPIC``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteProcessRecorder
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

#: (CloudEvent source, CloudEvent id)
MessageKey = tuple[str, str]


class PostgresExchangeRecorder(PostgresProcessRecorder):
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
        self.inbox_table = Identifier(f"{base}_inbox")
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0}.{1} (source text NOT NULL, id text NOT NULL, "
                "received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, id))"
            ).format(schema, self.inbox_table)
        )
        self._insert_inbox = SQL(
            "INSERT INTO {0}.{1} (source, id) SELECT * FROM unnest(%b::text[], %b::text[])"
        ).format(schema, self.inbox_table)
        self._select_inbox = SQL(
            "SELECT source, id FROM {0}.{1} WHERE (source, id) IN "
            "(SELECT * FROM unnest(%b::text[], %b::text[]))"
        ).format(schema, self.inbox_table)
        self._insert_columns = SQL(
            "INSERT INTO {0}.{1} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{2}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(
            schema,
            Identifier(self.events_table_name),
            Identifier(self.datastore.originator_id_type),
        )
        self._select_many = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {0}.{1} "
            "WHERE originator_id = ANY(%b) ORDER BY originator_id, originator_version"
        ).format(schema, Identifier(self.events_table_name))
        self._select_changes = SQL(
            "SELECT notification_id, originator_id, originator_version FROM {0}.{1} "
            "WHERE notification_id > %b AND NOT EXISTS (SELECT FROM unnest(%b::bigint[], "
            "%b::bigint[]) AS own(first, last) WHERE notification_id BETWEEN first AND last) "
            "ORDER BY notification_id"
        ).format(schema, Identifier(self.events_table_name))

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The library's insert (table lock, notify, one statement) with one typed array a
        column, sent in binary, instead of an array of a composite type sent as text: psycopg
        quotes every field of a composite with regular expressions, which was a tenth of the
        consumer's time."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self._insert_columns,
            (
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

    def select_events_of(self, originator_ids: Iterable[UUID]) -> list[StoredEvent]:
        """Every event of the given aggregates in one query, by aggregate and version."""
        ids = list(originator_ids)
        if not ids:
            return []
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_many, (ids,), binary=True)
            return [
                StoredEvent(
                    originator_id=r["originator_id"],
                    originator_version=r["originator_version"],
                    topic=r["topic"],
                    state=bytes(r["state"]),
                )
                for r in curs.fetchall()
            ]

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


class SQLiteExchangeRecorder(SQLiteProcessRecorder):
    def __init__(
        self, datastore: SQLiteDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.create_table_statements.append(
            "CREATE TABLE IF NOT EXISTS inbox (source text NOT NULL, id text NOT NULL, "
            "PRIMARY KEY (source, id))"
        )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        received: list[MessageKey] = kwargs.get("received") or []
        if received:
            c.executemany("INSERT INTO inbox (source, id) VALUES (?, ?)", received)
        return returning

    def received(self, keys: Iterable[MessageKey]) -> set[MessageKey]:
        found: set[MessageKey] = set()
        with self.datastore.transaction(commit=False) as c:
            for key in keys:
                c.execute("SELECT 1 FROM inbox WHERE source = ? AND id = ?", key)
                if c.fetchone():
                    found.add(key)
        return found

    def select_events_of(self, originator_ids: Iterable[UUID]) -> list[StoredEvent]:
        return [e for i in originator_ids for e in self.select_events(i)]

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


def exchange_recorder_topic(postgres: bool) -> str:
    cls = PostgresExchangeRecorder if postgres else SQLiteExchangeRecorder
    return f"{cls.__module__}:{cls.__qualname__}"

"""Where views live: the SQLite file or PostgreSQL schema of the events, plus a small dialect.

All SQL is written with ``?`` placeholders; the PostgreSQL side turns them into ``%s``. Tables
are declared once (:class:`Table`) and created, dropped and bulk-loaded from that declaration.
One tracking table holds each view's position in the log (view name -> last notification id).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACKING = "projection_tracking"
_SQL_TYPES = {"text": "TEXT", "int": "BIGINT", "real": "DOUBLE PRECISION"}


@dataclass(frozen=True)
class Table:
    """A view table: columns (name, type among text/int/real), primary key, extra indexes."""

    name: str
    columns: tuple[tuple[str, str], ...]
    pk: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c for c, _ in self.columns))

    def key(self, row: dict[str, Any]) -> Any:
        if len(self.pk) == 1:
            return row[self.pk[0]]
        return tuple(row[c] for c in self.pk)

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(c) for c in self.names)


def connect(params: dict[str, str]) -> Any:
    """An autocommit psycopg connection from ``Settings.postgres_params()``."""
    import psycopg

    return psycopg.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"] or None,
        dbname=params["dbname"],
        autocommit=True,
        connect_timeout=5,
    )


class ViewStore:
    """One connection to the views' database; ``postgres`` says which dialect."""

    def __init__(self, conn: Any, postgres: bool, schema: str | None = None) -> None:
        self.conn = conn
        self.postgres = postgres
        self.schema = schema
        self.lock = threading.RLock()

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def sqlite(cls, path: Path) -> ViewStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(conn, postgres=False)

    @classmethod
    def postgres_(cls, params: dict[str, str], schema: str | None) -> ViewStore:
        from psycopg import sql

        conn = connect(params)
        if schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return cls(conn, postgres=True, schema=schema)

    def close(self) -> None:
        self.conn.close()

    # --- statements ---------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """``?`` marks as the driver's; on PostgreSQL a literal ``%`` (``LIKE 'a.%'``) is
        doubled so that psycopg does not read it as a placeholder."""
        return text.replace("%", "%%").replace("?", "%s") if self.postgres else text

    def execute(self, text: str, params: Sequence[Any] = ()) -> int:
        with self.lock:
            cur = self.conn.execute(self.sql(text), tuple(params))
            return int(cur.rowcount or 0)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.lock:
            if self.postgres:
                with self.conn.cursor() as cur:
                    cur.executemany(self.sql(text), rows)
            else:
                self.conn.executemany(text, rows)

    def rows(self, text: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.lock:
            cur = self.conn.execute(self.sql(text), tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def one(self, text: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = self.rows(text, params)
        return found[0] if found else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write (SQLite: ``BEGIN IMMEDIATE``, so writers queue instead of failing)."""
        with self.lock:
            if self.postgres:
                with self.conn.transaction():
                    yield
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # --- tables -------------------------------------------------------------------------

    def create(self, table: Table, with_keys: bool = True) -> None:
        cols = ", ".join(f"{c} {_SQL_TYPES[t]}" for c, t in table.columns)
        pk = f", PRIMARY KEY ({', '.join(table.pk)})" if with_keys else ""
        self.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}{pk})")
        if with_keys:
            self.create_indexes(table)

    def create_indexes(self, table: Table) -> None:
        for cols in table.indexes:
            name = f"{table.name}_{'_'.join(cols)}_ix"
            self.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(cols)})")

    def add_keys(self, table: Table) -> None:
        """Primary key and indexes after a bulk load into a table created without them."""
        if self.postgres:
            self.execute(f"ALTER TABLE {table.name} ADD PRIMARY KEY ({', '.join(table.pk)})")
        else:
            name = f"{table.name}_pk"
            self.execute(f"CREATE UNIQUE INDEX {name} ON {table.name} ({', '.join(table.pk)})")
        self.create_indexes(table)

    def drop(self, table: Table) -> None:
        self.execute(f"DROP TABLE IF EXISTS {table.name}")

    def bulk_insert(self, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
        """Append rows (PostgreSQL: ``COPY``; SQLite: one ``executemany``)."""
        with self.lock:
            if self.postgres:
                with (
                    self.conn.cursor() as cur,
                    cur.copy(f"COPY {table.name} ({', '.join(table.names)}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in table.names)
                self.conn.executemany(
                    f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks})",
                    rows,
                )

    def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in table.names)
        updates = ", ".join(f"{c} = excluded.{c}" for c in table.names if c not in table.pk)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        self.executemany(
            f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(table.pk)}) {action}",
            rows,
        )

    def delete(self, table: Table, keys: Sequence[Any]) -> None:
        where = " AND ".join(f"{c} = ?" for c in table.pk)
        self.executemany(
            f"DELETE FROM {table.name} WHERE {where}",
            [k if isinstance(k, tuple) else (k,) for k in keys],
        )

    def load(self, table: Table, key: Any) -> dict[str, Any] | None:
        where = " AND ".join(f"{c} = ?" for c in table.pk)
        params = key if isinstance(key, tuple) else (key,)
        return self.one(f"SELECT {', '.join(table.names)} FROM {table.name} WHERE {where}", params)

    # --- tracking -----------------------------------------------------------------------

    def ensure_tracking(self) -> None:
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {TRACKING} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
        )

    def positions(self) -> dict[str, int]:
        return {r["name"]: int(r["position"]) for r in self.rows(f"SELECT * FROM {TRACKING}")}

    def set_position(self, name: str, position: int) -> None:
        if not self.execute(f"UPDATE {TRACKING} SET position = ? WHERE name = ?", (position, name)):
            self.execute(f"INSERT INTO {TRACKING} (name, position) VALUES (?, ?)", (name, position))

    def advance(self, name: str, expected: int, position: int) -> bool:
        """Move a view from ``expected`` to ``position``; False when someone else moved it."""
        return (
            self.execute(
                f"UPDATE {TRACKING} SET position = ? WHERE name = ? AND position = ?",
                (position, name, expected),
            )
            == 1
        )

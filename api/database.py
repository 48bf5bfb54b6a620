"""The API's own small tables (tokens, idempotency, the pages' sessions) in the deployment's
database.

They live next to the event store: the SQLite file of the embedded default, or the configured
PostgreSQL schema. SQL is written with ``?`` placeholders and adapted for PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from jiayi.settings import Settings

TABLES = (
    """CREATE TABLE IF NOT EXISTS api_tokens (
        token_hash TEXT PRIMARY KEY,
        token_id TEXT NOT NULL UNIQUE,
        staff_id TEXT NOT NULL,
        org_id TEXT,
        role TEXT NOT NULL,
        district TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS api_idempotency (
        principal TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER,
        body TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (principal, idem_key)
    )""",
    "CREATE INDEX IF NOT EXISTS api_idempotency_created ON api_idempotency (created_at)",
    # the pages' sign-in sessions: only the SHA-256 of the cookie's random id is stored, with
    # the hash of the API token it stands for (api.web.session)
    """CREATE TABLE IF NOT EXISTS web_sessions (
        session_hash TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS web_sessions_token ON web_sessions (token_hash)",
    "CREATE INDEX IF NOT EXISTS web_sessions_expires ON web_sessions (expires_at)",
)


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class SideStore:
    """Connections to the deployment's database for the API's own tables."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = False
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: Any = None

    @property
    def is_postgres(self) -> bool:
        return self.settings.uses_postgres

    @contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """A cursor in one transaction (committed on success, rolled back on error)."""
        self._ensure_tables()
        with self._connection() as cur:
            yield cur

    def ping(self) -> None:
        with self._connection() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # --- internals ----------------------------------------------------------------------

    def _ensure_tables(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            from jiayi.bootstrap import ddl_lock, ensure_schema

            with ddl_lock(self.settings):  # other processes may be starting too
                ensure_schema(self.settings)
                with self._connection() as cur:
                    for ddl in TABLES:
                        cur.execute(ddl)
            self._ready = True

    @contextmanager
    def _connection(self) -> Iterator[Cursor]:
        if self.is_postgres:
            with self._postgres() as cur:
                yield cur
        else:
            with self._sqlite() as cur:
                yield cur

    @contextmanager
    def _sqlite(self) -> Iterator[Cursor]:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.settings.sqlite_path, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteCursor(conn.cursor())
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _postgres(self) -> Iterator[Cursor]:
        with self._postgres_pool().connection(timeout=3) as conn, conn.cursor() as cur:
            yield _PostgresCursor(cur)

    def _postgres_pool(self) -> Any:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    params = self.settings.postgres_params()
                    kwargs: dict[str, Any] = {
                        "host": params["host"],
                        "port": params["port"],
                        "user": params["user"],
                        "dbname": params["dbname"],
                        "connect_timeout": 3,
                    }
                    if params["password"]:
                        kwargs["password"] = params["password"]
                    if self.settings.postgres_schema:
                        kwargs["options"] = f"-c search_path={self.settings.postgres_schema}"
                    self._pool = ConnectionPool(
                        kwargs=kwargs,
                        min_size=1,
                        max_size=max(2, self.settings.postgres_pool_size),
                        open=True,
                        check=ConnectionPool.check_connection,
                        timeout=3,
                    )
        return self._pool


class _SqliteCursor:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cur.execute(sql, tuple(params))

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class _PostgresCursor:
    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cur.execute(sql.replace("?", "%s"), tuple(params))

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

"""One active instance of a single-writer process: the relay (``jiayi publish``).

Two relays on one topic would each send every event (the tracking table keeps their positions
consistent, but receivers would see a patient's events twice, interleaved), as would a new
relay started before the old one stops during a rolling deployment. So a relay publishes only
while it holds a lock named after its position; another one stands by and takes over when the
lock is released, by a clean stop or by the holder's death:

- PostgreSQL: a session advisory lock on a connection of its own. The server releases it when
  the session ends: at once when the process dies, and within about 25 s when its host or
  network is lost (TCP keepalives on both sides of the connection, set per session).
- SQLite (one machine): an exclusive ``flock`` on a file beside the database, released by the
  kernel when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from pathlib import Path
from typing import IO, Protocol

import psycopg

log = logging.getLogger(__name__)


class Leadership(Protocol):
    def hold(self) -> bool:
        """Whether this process leads now: takes the lock when it is free, checks it when held."""
        ...

    def release(self) -> None: ...


MASK = 0xFFFFFFFF
#: Whether this session holds the advisory lock (a bigint key is shown as two 32-bit halves).
HELD = (
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1 AND granted"
)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresLeadership:
    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.key = lock_key(name)
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None

    def hold(self) -> bool:
        if self.conn is not None:
            try:
                row = self.conn.execute(HELD, (self.key >> 32 & MASK, self.key & MASK)).fetchone()
            except psycopg.Error as exc:
                row, reason = None, str(exc)
            else:
                reason = "the lock is gone"
            if row is not None:
                return True
            log.warning("leadership of %s lost: %s", self.name, reason)
            self.release()
            return False
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=5,
                # this side notices a lost server; the server's side notices a lost host
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                options="-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
                "-c tcp_keepalives_count=3",
                application_name=f"jiayi leader {self.name}"[:63],
            )
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            log.warning("leadership of %s: %s", self.name, exc)
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()  # a lock granted with its reply lost goes with the session
            return False
        if row and row[0]:
            self.conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()  # ends the session: the server releases the lock
            self.conn = None


class FileLeadership:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def hold(self) -> bool:
        if self.file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self.file = file
        return True

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the last descriptor releases the lock
            self.file = None

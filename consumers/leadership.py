"""One active instance of a single-writer process: the relay (``jiayi publish``).

Two relays on one topic would each send every event (the tracking table keeps their positions
consistent, but receivers would see a patient's events twice, interleaved), as would a new
relay started before the old one stops during a rolling deployment. So a relay publishes only
while it holds a lock named after its position; another one stands by and takes over when the
lock is released, by a clean stop or by the holder's death:

- PostgreSQL: a session advisory lock on a connection of its own. The server releases it when
  the session ends (process killed, host lost: TCP keepalives notice within about 25 s).
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
        try:
            if self.conn is not None:
                self.conn.execute("SELECT 1")  # the session lives, and so does its lock
                return True
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                application_name=f"jiayi leader {self.name}"[:63],
            )
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if row and row[0]:
                self.conn = conn
                return True
            conn.close()
            return False
        except psycopg.Error as exc:
            if self.conn is not None:
                log.warning("leadership of %s lost: %s", self.name, exc)
            self.release()
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

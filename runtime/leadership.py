"""One leader per duty: single-writer work done by one process at a time, with standbys.

A *duty* is work that only one process should do at a time, named by a stable string:
``kafka-relay:<partner topic prefix>`` (``jiayi publish``: two relays would each send every
event, interleaved), ``projections`` (``jiayi projections run`` or the runner inside ``jiayi
serve``: compare-and-set keeps a second runner harmless, but it would read and fold every batch
for nothing). A process does the duty only while it holds the duty's lock; another stands by,
polling, and takes over when the lock is released, by a clean stop or by the holder's death:

- PostgreSQL: a session advisory lock (key: the first 8 bytes of SHA-256 of
  ``<schema>:<duty>``) on a connection of its own. The server releases it when the session
  ends: at once when the process dies, and within about 25 s when its host or network is lost
  (TCP keepalives on both sides of the connection, set per session). A holder checks it is still
  granted (``pg_locks``) before each write its duty makes: a dropped connection is noticed there
  and the work stops at once.
- SQLite (one machine): an exclusive ``flock`` on ``<data dir>/<duty>.lock``, released by the
  kernel when the process dies.

:class:`Duty` wraps a lock: it logs one line when this process becomes leader, stands by, or
loses the leadership (with the reason), and calls ``on_change(held)`` at each change (the hook
for a "which process holds which duty" gauge).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
from collections.abc import Callable
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


def lock_file_name(duty: str) -> str:
    """The lock file of ``duty`` beside an embedded store (``kafka-relay.jiayi.partner.lock``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", ".", duty).strip(".") + ".lock"


class PostgresLeadership:
    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.key = lock_key(name)
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None
        #: Why the lock was last lost or not taken (for the log line); None: no failure.
        self.reason: str | None = None

    def hold(self) -> bool:
        if self.conn is not None:
            try:
                row = self.conn.execute(HELD, (self.key >> 32 & MASK, self.key & MASK)).fetchone()
            except psycopg.Error as exc:
                row, reason = None, str(exc).strip() or type(exc).__name__
            else:
                reason = "the lock is gone"
            if row is not None:
                return True
            self.reason = reason
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
            self.reason = str(exc).strip() or type(exc).__name__
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()  # a lock granted with its reply lost goes with the session
            return False
        if row and row[0]:
            self.conn = conn
            self.reason = None
            return True
        self.reason = None
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
        self.reason: str | None = None

    def hold(self) -> bool:
        if self.file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Python opens files close-on-exec: processes this one starts never hold the lock
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


class Duty:
    """A duty this process does only while it holds ``lock`` (see the module).

    :meth:`hold` takes or checks the lock and reports changes: one log line each (leader,
    standing by, lost with the reason, released) and ``on_change(held)``."""

    def __init__(
        self, name: str, lock: Leadership, on_change: Callable[[bool], None] | None = None
    ) -> None:
        self.name = name
        self.lock = lock
        self.on_change = on_change
        #: Whether this process held the duty at the last look; None: never looked.
        self.held: bool | None = None

    def hold(self) -> bool:
        held = self.lock.hold()
        if held != self.held:
            was, self.held = self.held, held
            reason = getattr(self.lock, "reason", None)
            if held:
                log.info("leader of %s", self.name, extra={"duty": self.name})
            elif was:
                log.warning(
                    "lost the leadership of %s: %s; stopped, standing by",
                    self.name,
                    reason or "the lock is gone",
                    extra={"duty": self.name},
                )
            else:
                log.info(
                    "standing by for %s: another process holds it%s",
                    self.name,
                    f" ({reason})" if reason else "",
                    extra={"duty": self.name},
                )
            self._changed(held)
        return held

    def release(self) -> None:
        """Let the duty go (a clean stop): a standby takes over at its next look."""
        self.lock.release()
        if self.held:
            log.info("released the leadership of %s", self.name, extra={"duty": self.name})
            self.held = False
            self._changed(False)

    def _changed(self, held: bool) -> None:
        # jiayi.bootstrap.build_duty passes one that sets the duty's gauge (jiayi_duty_held)
        if self.on_change is not None:
            try:
                self.on_change(held)
            except Exception:
                log.exception("on_change of %s failed", self.name)

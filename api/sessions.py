"""The pages' sign-in sessions, kept on the server (table ``web_sessions``).

Signing in with an API token makes a session: a random id (256 bits) that the browser's cookie
holds instead of the token. Only the id's SHA-256 is stored, with the hash of the token it
stands for, when it was made, last used and when it ends for good. A session ends when it is
not used for ``idle`` seconds, ``lifetime`` seconds after it was made, at sign-out, and when
its token is revoked (:meth:`api.tokens.TokenStore.revoke` deletes its sessions; the lookup
also asks for a live token). Ended sessions are deleted a few at a time as new ones are made.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from api.database import SideStore

#: Seconds a looked-up session is trusted without asking the database again (as tokens are).
CACHE_SECONDS = 5.0
#: Ended sessions deleted each time one is made.
PURGE_BATCH = 10


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    last_seen: datetime
    expires: datetime


class SessionStore:
    """Make, look up (with a short cache) and end the pages' sessions."""

    def __init__(self, store: SideStore, idle: float, lifetime: float) -> None:
        self.store = store
        self.idle = timedelta(seconds=idle)
        self.lifetime = timedelta(seconds=lifetime)
        #: Last use is written at most this often (not on every page).
        self.touch_every = min(timedelta(seconds=60), self.idle / 10)
        self._cache: dict[str, tuple[float, Session | None]] = {}
        self._lock = threading.Lock()

    def create(self, token_hash: str, now: datetime | None = None) -> str:
        """A new session for the token with this hash; returns its id (for the cookie only)."""
        now = now or datetime.now(UTC)
        session_id = secrets.token_urlsafe(32)
        with self.store.cursor() as cur:
            cur.execute(
                "DELETE FROM web_sessions WHERE session_hash IN (SELECT session_hash FROM"
                " web_sessions WHERE expires_at < ? OR last_seen_at < ? LIMIT ?)",
                (_text(now), _text(now - self.idle), PURGE_BATCH),
            )
            cur.execute(
                "INSERT INTO web_sessions (session_hash, token_hash, created_at, last_seen_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?)",
                (
                    session_hash(session_id),
                    token_hash,
                    _text(now),
                    _text(now),
                    _text(now + self.lifetime),
                ),
            )
        return session_id

    def token_hash(self, session_id: str, now: datetime | None = None) -> str | None:
        """The hash of the token a live session stands for; None when there is no such
        session or it has ended (an ended one is deleted)."""
        if not session_id:
            return None
        now = now or datetime.now(UTC)
        digest = session_hash(session_id)
        clock = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and clock - cached[0] < CACHE_SECONDS:
            found = cached[1]
        else:
            found = self._read(digest)
            self._remember(digest, clock, found)
        if found is None:
            return None
        if now >= found.expires or now - found.last_seen >= self.idle:
            self.end(session_id)
            return None
        if now - found.last_seen >= self.touch_every:
            with self.store.cursor() as cur:
                cur.execute(
                    "UPDATE web_sessions SET last_seen_at = ? WHERE session_hash = ?",
                    (_text(now), digest),
                )
            self._remember(digest, clock, replace(found, last_seen=now))
        return found.token_hash

    def end(self, session_id: str) -> None:
        digest = session_hash(session_id)
        with self.store.cursor() as cur:
            cur.execute("DELETE FROM web_sessions WHERE session_hash = ?", (digest,))
        with self._lock:
            self._cache.pop(digest, None)

    def _read(self, digest: str) -> Session | None:
        with self.store.cursor() as cur:
            cur.execute(
                "SELECT token_hash, last_seen_at, expires_at FROM web_sessions"
                " WHERE session_hash = ?",
                (digest,),
            )
            row = cur.fetchone()
        if row is None:
            return None
        return Session(row[0], datetime.fromisoformat(row[1]), datetime.fromisoformat(row[2]))

    def _remember(self, digest: str, clock: float, found: Session | None) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (clock, found)


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")

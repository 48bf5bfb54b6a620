"""Envelope encryption: the master key, each patient's data key, and destroying one.

* The **master key** (32 random bytes, base64 on one line of a file kept outside the
  database: ``JIAYI_MASTER_KEY_FILE``) wraps every data key. It never reaches the database;
  its id (the first 8 bytes of its SHA-256, hex) is stored beside each wrapped key, so a wrong
  key file is named at start-up instead of failing on some later read.
* A **data key** per patient (AES-256-GCM), created the first time an event holding that
  patient's personal data is stored, kept in ``personal_keys`` beside the events wrapped by
  the master key (AES-GCM, the patient's id as associated data: a wrapped key copied to
  another patient does not open). One more row, ``subject = 'blind-index'``, holds the key of
  the national-id blind index (HMAC-SHA-256), so rotating the master key changes no index.
* **Erasure** destroys a patient's wrapped key (the row keeps ``erased_at``, and
  ``personal_key_erasures`` gets a row every process's cache reads, so a key cached in memory
  is dropped at the next read). Without it the patient's tokens never open again: events,
  views, as-of replays and copies all hold ciphertext only.
* **Rotation** unwraps every data key with the old master key and wraps it with the new one,
  in one transaction; no event is touched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.personal import normalise_identifier
from projections.store import ViewStore

KEYS = "personal_keys"
ERASURES = "personal_key_erasures"
#: The row holding the blind index's HMAC key.
INDEX_SUBJECT = "blind-index"
_WRAP_AAD = b"jiayi.key.v1\x00"
_MISSING = object()


class KeyRingError(Exception):
    """The keys cannot be used as configured: the message says what to do."""


class MasterKey:
    """The key that wraps data keys; loaded from a file, never stored with the data."""

    def __init__(self, key: bytes, source: str = "") -> None:
        if len(key) != 32:
            raise KeyRingError(f"the master key {source} is not 32 bytes of base64")
        self.aead = AESGCM(key)
        self.id = hashlib.sha256(key).hexdigest()[:16]
        self.source = source

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise KeyRingError(f"no master key file at {path}") from None
        except OSError as e:
            raise KeyRingError(f"the master key file {path} cannot be read: {e}") from None
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError:
            raise KeyRingError(f"the master key file {path} is not base64") from None
        return cls(key, str(path))

    @staticmethod
    def create(path: Path) -> MasterKey:
        """A new random master key written to ``path`` (mode 0600; refuses to overwrite)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return MasterKey(key, str(path))

    def wrap(self, subject: str, key: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, key, _WRAP_AAD + subject.encode())
        return base64.b64encode(nonce + sealed).decode()

    def unwrap(self, subject: str, wrapped: str) -> bytes:
        raw = base64.b64decode(wrapped)
        try:
            return self.aead.decrypt(raw[:12], raw[12:], _WRAP_AAD + subject.encode())
        except InvalidTag:
            raise KeyRingError(
                f"the data key of {subject} does not open with the master key {self.source} "
                "(changed, or moved from another row)"
            ) from None


def subject_key(subject: UUID | str) -> str:
    """How a patient is named in the key table: 32 hex characters."""
    return subject.hex if isinstance(subject, UUID) else subject


class KeyRing:
    """Data keys of one store, cached in memory (``capacity`` of them), thread-safe.

    ``aead(subject)`` gives the patient's cipher, ``None`` once erased; ``ensure(subjects)``
    creates the missing ones in one transaction (orphans, when what needed them is then not
    stored, are harmless). ``refresh()`` drops keys erased since the last look (any process).
    """

    def __init__(
        self,
        open_store: Callable[[], ViewStore],
        master: MasterKey,
        capacity: int = 200_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.open_store = open_store
        self.master = master
        self.capacity = capacity
        self.clock = clock
        self.lock = threading.RLock()
        self._store: ViewStore | None = None
        self._cache: OrderedDict[str, AESGCM | None] = OrderedDict()
        self._erasure_seen = 0
        self._index_key: bytes | None = None

    # --- the table ----------------------------------------------------------------------

    @property
    def store(self) -> ViewStore:
        """The ring's connection, opened again when the last one was lost (the database
        restarted: the statement that met it failed and its caller retries; the next one must
        not meet a closed connection for ever)."""
        if self._store is not None and getattr(self._store.conn, "closed", False):
            self._store = None
        if self._store is None:
            self._store = self.open_store()
        return self._store

    def close(self) -> None:
        with self.lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def create_tables(self) -> None:
        s = self.store
        serial = "BIGSERIAL" if s.postgres else "INTEGER"
        s.execute(
            f"CREATE TABLE IF NOT EXISTS {KEYS} (subject TEXT PRIMARY KEY, master_id TEXT NOT NULL, "
            "wrapped TEXT, created_at TEXT NOT NULL, erased_at TEXT, found_by TEXT)"
        )
        try:  # a table made before the blind index was kept here
            s.execute(f"SELECT found_by FROM {KEYS} LIMIT 0")
        except Exception:
            s.execute(f"ALTER TABLE {KEYS} ADD COLUMN found_by TEXT")
        s.execute(f"CREATE INDEX IF NOT EXISTS {KEYS}_found_by_ix ON {KEYS} (found_by)")
        s.execute(
            f"CREATE TABLE IF NOT EXISTS {ERASURES} (seq {serial} PRIMARY KEY, "
            "subject TEXT NOT NULL, at TEXT NOT NULL)"
        )

    def open(self) -> KeyRing:
        """Check the master key against the store (creating the tables and the blind index's
        key in a new store): :class:`KeyRingError` saying what is wrong, else ``self``."""
        with self.lock:
            self.create_tables()
            found = self.store.one(
                f"SELECT master_id FROM {KEYS} WHERE subject = ?", (INDEX_SUBJECT,)
            )
            if found is not None and found["master_id"] != self.master.id:
                raise KeyRingError(
                    f"this store's data keys are wrapped by master key {found['master_id']}, "
                    f"not by the one in {self.master.source} ({self.master.id}): the wrong key "
                    "file, or a rotation not finished (jiayi keys rotate)"
                )
            if found is None:
                self._insert({INDEX_SUBJECT: os.urandom(32)})
            self._index_key = self._unwrapped(INDEX_SUBJECT)
            row = self.store.one(f"SELECT COALESCE(MAX(seq), 0) AS n FROM {ERASURES}")
            self._erasure_seen = int(row["n"]) if row else 0
            return self

    def has_keys(self) -> bool:
        """Whether the store holds any key (so a new master key would lose them)."""
        self.create_tables()
        return self.store.one(f"SELECT 1 AS x FROM {KEYS} LIMIT 1") is not None

    def _insert(self, keys: dict[str, bytes], found_by: Mapping[str, str] | None = None) -> None:
        now = self.clock().isoformat()
        found_by = found_by or {}
        rows = [
            (s, self.master.id, self.master.wrap(s, k), now, found_by.get(s))
            for s, k in keys.items()
        ]
        self.store.executemany(
            f"INSERT INTO {KEYS} (subject, master_id, wrapped, created_at, found_by) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (subject) DO NOTHING",
            rows,
        )

    def _unwrapped(self, subject: str) -> bytes | None:
        row = self.store.one(f"SELECT master_id, wrapped FROM {KEYS} WHERE subject = ?", (subject,))
        if row is None or row["wrapped"] is None:
            return None
        self._check_master(row["master_id"])
        return self.master.unwrap(subject, row["wrapped"])

    def _check_current_master(self) -> None:
        """New keys are wrapped by the store's current master key only (after a rotation, a
        process still holding the old one must not make keys nobody will be able to open)."""
        row = self.store.one(f"SELECT master_id FROM {KEYS} WHERE subject = ?", (INDEX_SUBJECT,))
        if row is not None:
            self._check_master(row["master_id"])

    def _check_master(self, master_id: str) -> None:
        if master_id != self.master.id:
            raise KeyRingError(
                f"a data key is wrapped by master key {master_id}, this process has "
                f"{self.master.id} ({self.master.source}): restart it with the rotated key file"
            )

    # --- data keys ----------------------------------------------------------------------

    def ensure(
        self, subjects: Iterable[UUID | str], found_by: Mapping[UUID, str] | None = None
    ) -> None:
        """Every subject has a data key (or is erased) when this returns; ``found_by`` gives
        some of them the identifier they are found by (a resident id number), kept as its
        blind index beside their key (and gone with it)."""
        indexes = {subject_key(s): self.blind_index(v) for s, v in (found_by or {}).items()}
        with self.lock:
            wanted = self._uncached(subjects)
            missing: set[str] = set()
            if wanted:
                self._load(wanted)
                missing = {s for s in wanted if s not in self._cache}
                if missing:
                    self._check_current_master()
                    self._insert({s: os.urandom(32) for s in missing}, indexes)
                    self._load(missing)
            known = [(i, s) for s, i in indexes.items() if s not in missing]
            if known:  # a key made earlier (an event stored before this identifier)
                self.store.executemany(
                    f"UPDATE {KEYS} SET found_by = ? WHERE subject = ? AND wrapped IS NOT NULL",
                    known,
                )

    def find(self, identifier: str) -> list[str]:
        """The subjects (hex) found by ``identifier`` (not erased)."""
        with self.lock:
            rows = self.store.rows(
                f"SELECT subject FROM {KEYS} WHERE found_by = ? AND wrapped IS NOT NULL "
                "ORDER BY subject",
                (self.blind_index(identifier),),
            )
        return [r["subject"] for r in rows]

    def aead(self, subject: UUID | str) -> AESGCM | None:
        """The subject's cipher; ``None`` when erased or never given a key."""
        key = subject_key(subject)
        found = self._cache.get(key, _MISSING)  # a hit needs no lock (recency is not updated)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        with self.lock:
            self._load({key})
            return self._cache.get(key)

    def load(self, subjects: Iterable[UUID | str]) -> None:
        """Bring these subjects' keys into the cache with one query (a search, a page)."""
        with self.lock:
            wanted = self._uncached(subjects)
            if wanted:
                self._load(wanted)

    def _uncached(self, subjects: Iterable[UUID | str]) -> set[str]:
        # Not ``set - self._cache.keys()``: that walks the whole cache (200,000 keys) each time.
        cache = self._cache
        return {k for k in map(subject_key, subjects) if k not in cache}

    def _load(self, subjects: set[str]) -> None:
        listed = sorted(subjects)
        for start in range(0, len(listed), 500):
            chunk = listed[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.store.rows(
                f"SELECT subject, master_id, wrapped FROM {KEYS} WHERE subject IN ({marks})", chunk
            ):
                subject, wrapped = row["subject"], row["wrapped"]
                if wrapped is None:
                    self._put(subject, None)
                    continue
                self._check_master(row["master_id"])
                self._put(subject, AESGCM(self.master.unwrap(subject, wrapped)))

    def _put(self, subject: str, aead: AESGCM | None) -> None:
        self._cache[subject] = aead
        self._cache.move_to_end(subject)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def refresh(self) -> None:
        """Forget keys erased (by any process) since the last look: one small query."""
        with self.lock:
            rows = self.store.rows(
                f"SELECT seq, subject FROM {ERASURES} WHERE seq > ? ORDER BY seq",
                (self._erasure_seen,),
            )
            for row in rows:
                self._cache.pop(row["subject"], None)
                self._erasure_seen = max(self._erasure_seen, int(row["seq"]))

    def erase(self, subject: UUID | str) -> bool:
        """Destroy the subject's data key; whether there was one to destroy. A subject without
        a row gets an erased one, so no key is ever created for it again."""
        key = subject_key(subject)
        now = self.clock().isoformat()
        with self.lock:
            s = self.store
            with s.transaction():
                if s.postgres:  # erasures numbered in commit order: refresh() misses none
                    s.execute(f"LOCK TABLE {ERASURES} IN EXCLUSIVE MODE")
                found = s.one(f"SELECT wrapped FROM {KEYS} WHERE subject = ?", (key,))
                if found is None:
                    s.execute(
                        f"INSERT INTO {KEYS} (subject, master_id, wrapped, created_at, erased_at) "
                        "VALUES (?, ?, NULL, ?, ?)",
                        (key, self.master.id, now, now),
                    )
                else:
                    s.execute(
                        f"UPDATE {KEYS} SET wrapped = NULL, found_by = NULL, "
                        "erased_at = COALESCE(erased_at, ?) WHERE subject = ?",
                        (now, key),
                    )
                s.execute(f"INSERT INTO {ERASURES} (subject, at) VALUES (?, ?)", (key, now))
            self._put(key, None)
            return found is not None and found["wrapped"] is not None

    def erased(self, subject: UUID | str) -> bool:
        with self.lock:
            row = self.store.one(
                f"SELECT erased_at FROM {KEYS} WHERE subject = ?", (subject_key(subject),)
            )
        return row is not None and row["erased_at"] is not None

    # --- the blind index ----------------------------------------------------------------

    def blind_index(self, identifier: str) -> str:
        """The keyed hash an identifier (a resident id number, normalised) is found by: 32 hex
        characters."""
        key = self._index_key
        if key is None:
            raise KeyRingError("the key ring is not open")
        text = normalise_identifier(identifier)
        return hmac.digest(key, text.encode(), "sha256").hex()[:32]

    # --- rotation -----------------------------------------------------------------------

    def rotate(self, new: MasterKey) -> int:
        """Rewrap every data key with ``new`` in one transaction; how many were rewrapped.
        Rows already wrapped by ``new`` (a rotation run again) are left as they are."""
        with self.lock:
            s = self.store
            count = 0
            with s.transaction():
                if s.postgres:  # erasures and new keys wait: none is lost or brought back
                    s.execute(f"LOCK TABLE {KEYS} IN SHARE ROW EXCLUSIVE MODE")
                rows = s.rows(f"SELECT subject, master_id, wrapped FROM {KEYS}")
                updates: list[tuple[Any, ...]] = []
                for row in rows:
                    if row["master_id"] == new.id:
                        continue
                    self._check_master(row["master_id"])
                    wrapped = row["wrapped"]
                    if wrapped is not None:
                        wrapped = new.wrap(
                            row["subject"], self.master.unwrap(row["subject"], wrapped)
                        )
                    updates.append((new.id, wrapped, row["subject"]))
                s.executemany(
                    f"UPDATE {KEYS} SET master_id = ?, wrapped = ? WHERE subject = ?", updates
                )
                count = len(updates)
            self.master = new
            self._cache.clear()
            return count

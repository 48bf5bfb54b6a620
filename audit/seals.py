"""Seals: the chain's head (position, hash, time) signed with a key kept outside the database.

Someone who can write the database can change an event and recompute every digest and link
after it: the chain alone then verifies. They cannot sign. A seal states "the chain's link at
position P was H at time T", signed with Ed25519; ``jiayi audit verify`` compares the chain
with every seal it is given (the database's seal table, and a copy held elsewhere: the seal
log file, or the audit topic), so history rewritten after a seal is caught.

Where seals go, each time: the seal table beside the events; the seal log (one JSON object a
line, ``JIAYI_AUDIT_SEAL_LOG``, fsynced); and, when Kafka is configured, the audit topic.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from eventstore.recorders import Tables, tables
from jiayi.settings import Settings
from projections.store import ViewStore

log = logging.getLogger("jiayi.audit")

_SEAL = b"jiayi.seal.v1\x00"


class NoSigningKey(RuntimeError):
    """Seals need the signing key, and none is configured or readable."""


@dataclass(frozen=True)
class Seal:
    position: int
    hash: bytes
    sealed_at: str  # ISO 8601, UTC
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return seal_message(self.position, self.hash, self.sealed_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "hash": self.hash.hex(),
            "sealed_at": self.sealed_at,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Seal:
        return cls(
            position=int(data["position"]),
            hash=bytes.fromhex(data["hash"]),
            sealed_at=str(data["sealed_at"]),
            key_id=str(data["key_id"]),
            signature=base64.b64decode(data["signature"]),
        )

    def valid(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(self.signature, self.message())
        except InvalidSignature:
            return False
        return self.key_id == key_id(public)


def seal_message(position: int, hash_: bytes, sealed_at: str) -> bytes:
    return _SEAL + position.to_bytes(8, "big") + hash_ + sealed_at.encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256(raw).hexdigest()[:16]


# --- keys -------------------------------------------------------------------------------------


def key_path(settings: Settings) -> Path | None:
    """The signing key's file: the setting, or the embedded default's data directory."""
    if settings.audit_key_file is not None:
        return settings.audit_key_file
    if not settings.uses_postgres:
        return settings.data_dir / "audit" / "seal-key.pem"
    return None


def seal_log_path(settings: Settings) -> Path:
    return settings.audit_seal_log or settings.data_dir / "audit" / "seals.jsonl"


def create_key(path: Path) -> Ed25519PrivateKey:
    """A new signing key in ``path`` (mode 0600; never overwrites)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    log.warning("created the audit signing key %s (keep a copy of its public key elsewhere)", path)
    return key


def signing_key(settings: Settings, *, create: bool = False) -> Ed25519PrivateKey:
    """The deployment's signing key (created on the embedded default when ``create``)."""
    path = key_path(settings)
    if path is None:
        raise NoSigningKey(
            "no audit signing key: set JIAYI_AUDIT_KEY_FILE to an Ed25519 private key (PEM) "
            "kept outside the database (`jiayi audit key --new FILE` makes one)"
        )
    if not path.exists():
        if create and settings.audit_key_file is None:
            return create_key(path)
        raise NoSigningKey(f"the audit signing key file does not exist: {path.name}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise NoSigningKey(f"the audit signing key is not a readable PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise NoSigningKey("the audit signing key is not an Ed25519 key")
    return key


def public_key(path: Path) -> Ed25519PublicKey:
    """The public key in ``path`` (a public key PEM, or the private key's)."""
    data = path.read_bytes()
    try:
        found: Any = serialization.load_pem_public_key(data)
    except ValueError:
        found = serialization.load_pem_private_key(data, password=None).public_key()
    if not isinstance(found, Ed25519PublicKey):
        raise ValueError("not an Ed25519 key")
    return found


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# --- where seals are kept -----------------------------------------------------------------------


def open_store(settings: Settings) -> ViewStore:
    if settings.uses_postgres:
        return ViewStore.postgres_(settings.postgres_params(), settings.postgres_schema)
    return ViewStore.sqlite(settings.sqlite_path)


class SealBook:
    """The seal table and the chain's head, on one connection."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self.tables: Tables = tables(store.postgres)

    def head(self) -> tuple[int, bytes] | None:
        row = self.store.one(
            f"SELECT {self.tables.position} AS position, hash FROM {self.tables.events} "
            f"WHERE hash IS NOT NULL ORDER BY {self.tables.position} DESC LIMIT 1"
        )
        return None if row is None else (int(row["position"]), bytes(row["hash"]))

    def seals(self) -> list[Seal]:
        return [
            Seal(
                int(r["position"]),
                bytes(r["hash"]),
                r["sealed_at"],
                r["key_id"],
                bytes(r["signature"]),
            )
            for r in self.store.rows(
                "SELECT position, hash, sealed_at, key_id, signature "
                f"FROM {self.tables.seals} ORDER BY id"
            )
        ]

    def last(self) -> Seal | None:
        found = self.seals()
        return found[-1] if found else None

    def add(self, seal: Seal) -> None:
        self.store.execute(
            f"INSERT INTO {self.tables.seals} (position, hash, sealed_at, key_id, signature) "
            "VALUES (?, ?, ?, ?, ?)",
            (seal.position, seal.hash, seal.sealed_at, seal.key_id, seal.signature),
        )


def append_to_log(path: Path, seal: Seal) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(seal.to_json(), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_log(path: Path) -> list[Seal]:
    """Seals from a seal log (JSON lines); a line that is not a seal raises ValueError."""
    found: list[Seal] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                found.append(Seal.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path.name}, line {number}: not a seal ({e})") from e
    return found


def sign(key: Ed25519PrivateKey, position: int, hash_: bytes, at: datetime | None = None) -> Seal:
    sealed_at = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
    return Seal(
        position,
        hash_,
        sealed_at,
        key_id(key.public_key()),
        key.sign(seal_message(position, hash_, sealed_at)),
    )


class Sealer:
    """Makes seals of the chain's head and keeps them in every place configured."""

    def __init__(
        self,
        settings: Settings,
        key: Ed25519PrivateKey,
        store: ViewStore | None = None,
        publish: Callable[[Seal], None] | None = None,
    ) -> None:
        self.settings = settings
        self.key = key
        self.book = SealBook(store or open_store(settings))
        self.log_path = seal_log_path(settings)
        self.publish = publish

    def seal(self, *, force: bool = False) -> Seal | None:
        """A seal of the head now; None when the log is empty, or (unless ``force``) when
        the head is already sealed."""
        head = self.book.head()
        if head is None:
            return None
        last = self.book.last()
        if last is not None and last.position == head[0] and last.hash == head[1] and not force:
            return None
        seal = sign(self.key, *head)
        self.book.add(seal)
        append_to_log(self.log_path, seal)
        if self.publish is not None:
            try:
                self.publish(seal)
            except Exception:  # the seal is kept in two places already; say so, go on
                log.exception("could not publish the seal at position %d", seal.position)
        log.info("sealed the hash chain at position %d", seal.position)
        return seal

    def close(self) -> None:
        self.book.store.close()


class SealSchedule:
    """Seals every ``interval`` seconds in a long-running process (when the log moved)."""

    def __init__(self, sealer: Sealer, interval: float) -> None:
        self.sealer = sealer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jiayi-seals", daemon=True)

    def start(self) -> SealSchedule:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop, sealing the head once more (a clean stop leaves the last events sealed)."""
        self._stop.set()
        self._thread.join(timeout)
        try:
            self.sealer.seal()
        except Exception:
            log.exception("the last seal failed")
        self.sealer.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sealer.seal()
            except Exception:
                log.exception("sealing the hash chain failed; trying again in %ss", self.interval)


def start_schedule(settings: Settings, *, to_kafka: bool = False) -> SealSchedule | None:
    """The seal schedule of a long-running process; None (and a log line) without a key."""
    try:
        key = signing_key(settings, create=True)
    except NoSigningKey as e:
        log.warning("seals off: %s", e)
        return None
    publish = kafka_publisher(settings) if to_kafka else None
    return SealSchedule(
        Sealer(settings, key, publish=publish), settings.audit_seal_interval
    ).start()


def kafka_publisher(settings: Settings) -> Callable[[Seal], None] | None:
    """Publishes seals to the audit topic (None without Kafka)."""
    if not settings.kafka_bootstrap:
        return None
    from kafka import KafkaProducer

    from jiayi.bootstrap import kafka_client_config

    producer: Any = None

    def publish(seal: Seal) -> None:
        nonlocal producer
        if producer is None:
            producer = KafkaProducer(
                **kafka_client_config(settings, "relay"), acks="all", linger_ms=0
            )
        producer.send(
            settings.audit_topic,
            key=b"seal",
            value=json.dumps(seal.to_json(), sort_keys=True).encode(),
        ).get(timeout=30)

    return publish


def read_topic(settings: Settings, timeout: float = 10.0) -> list[Seal]:
    """Every seal on the audit topic (as the administrator)."""
    from kafka import KafkaConsumer, TopicPartition

    from jiayi.bootstrap import kafka_client_config

    consumer = KafkaConsumer(
        **kafka_client_config(settings, "admin"), enable_auto_commit=False, group_id=None
    )
    try:
        parts = consumer.partitions_for_topic(settings.audit_topic) or set()
        assigned = [TopicPartition(settings.audit_topic, p) for p in parts]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        found: list[Seal] = []
        deadline = datetime.now(UTC).timestamp() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            if datetime.now(UTC).timestamp() > deadline:
                raise TimeoutError("reading the audit topic took too long")
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(Seal.from_json(json.loads(r.value)) for r in records)
        return found
    finally:
        consumer.close()


def unique(seals: Iterable[Seal]) -> Iterator[Seal]:
    seen: set[bytes] = set()
    for s in seals:
        if s.signature not in seen:
            seen.add(s.signature)
            yield s

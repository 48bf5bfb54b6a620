"""Domain events to stored rows and back, with encryption bound to the row's place.

The library's AES-GCM cipher authenticates an event's state but not where it is stored: two
encrypted rows swapped between patients decrypt happily. ``PlacedCipher`` makes the row's
aggregate id, version and topic the associated data of AES-GCM, so a state moved to another
row does not decrypt there. ``PlacedMapper`` uses it, and turns every failure to read a row
(decryption, decompression, JSON) into a :class:`~eventstore.errors.DamagedEvent` naming
the row.

Stored format: ``b"J1" | nonce (12) | tag (16) | ciphertext``. Rows written before (the
library's ``nonce | tag | ciphertext``, not bound to a place) are still read.
"""

from __future__ import annotations

import os
from base64 import b64decode
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from Crypto.Cipher import AES
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Cipher, Mapper, StoredEvent
from eventsourcing.utils import Environment, get_topic, resolve_topic

from domain.patients import PatientErased
from domain.personal import PERSONAL_FIELDS, SUBJECTS, NoSubject, subject_of
from eventstore.errors import DamagedEvent
from eventstore.keys import KeyRing
from eventstore.personal import STORED_MARK, open_value, seal_tree, stored_subjects

_MARK = b"J1"
_PLACE = b"jiayi.event.v1\x00"


def place(originator_id: UUID, version: int, topic: str) -> bytes:
    """The associated data binding a state to its row."""
    return _PLACE + originator_id.bytes + version.to_bytes(8, "big", signed=True) + topic.encode()


class PlacedCipher(Cipher):
    """AES-GCM (pycryptodome, as the library's ``AESCipher``) with associated data."""

    def __init__(self, environment: Environment) -> None:
        key = environment.get("CIPHER_KEY")
        if not key:
            raise OSError("'CIPHER_KEY' not in env")
        self.key = b64decode(key.encode())
        if len(self.key) not in (16, 24, 32):
            raise ValueError(f"invalid AES key size {len(self.key)}")

    def encrypt(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        cipher = AES.new(self.key, AES.MODE_GCM, nonce)
        cipher.update(associated)
        encrypted, tag = cipher.encrypt_and_digest(plaintext)
        return _MARK + nonce + tag + encrypted

    def decrypt(self, ciphertext: bytes, associated: bytes = b"") -> bytes:
        """The plaintext; ``ValueError`` naming why not."""
        if ciphertext[:2] == _MARK and len(ciphertext) >= 30:
            try:
                return self._open(ciphertext[2:], associated)
            except ValueError:
                try:  # a row of the library's format whose nonce happens to start with J1
                    return self._open(ciphertext, b"")
                except ValueError:
                    raise ValueError(
                        "does not decrypt at its place (moved from another row, or changed)"
                    ) from None
        try:
            return self._open(ciphertext, b"")
        except ValueError:
            raise ValueError("does not decrypt (changed, or another key)") from None

    def _open(self, sealed: bytes, associated: bytes) -> bytes:
        if len(sealed) < 28:
            raise ValueError("too short")
        cipher = AES.new(self.key, AES.MODE_GCM, sealed[:12])
        cipher.update(associated)
        plaintext: bytes = cipher.decrypt_and_verify(sealed[28:], sealed[12:28])
        return plaintext


class PlacedMapper(Mapper[UUID]):
    """Also seals each event's personal fields (``domain.personal``) with the patient's data
    key from :attr:`keyring` (``eventstore.personal``), and opens them when reading an event
    back for the domain. Without a key ring an event holding personal data is refused."""

    keyring: KeyRing | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic = get_topic(domain_event.__class__)
        event_state = dict(vars(domain_event))
        fields = PERSONAL_FIELDS.get(type(domain_event))  # type: ignore[arg-type]
        if fields:
            self._seal(domain_event, event_state, fields)
        originator_id = event_state.pop("originator_id")
        originator_version = event_state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            event_state["class_version"] = class_version
        state = self.stored_state(
            originator_id, originator_version, topic, self.transcoder.encode(event_state)
        )
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=state,
        )

    def _seal(
        self,
        domain_event: DomainEventProtocol[UUID],
        state: dict[str, Any],
        fields: tuple[str, ...],
    ) -> None:
        keyring = self.keyring
        if keyring is None:
            raise RuntimeError("no key ring: personal data would be stored in plain text")
        subject = SUBJECTS.get().get(id(domain_event))
        if subject is None:
            try:
                subject = subject_of(None, domain_event)  # type: ignore[arg-type]
            except NoSubject:
                raise NoSubject(
                    f"{type(domain_event).__qualname__} holds personal data and was not stored "
                    "through the unit of work, which says whose"
                ) from None
        aead = keyring.aead(subject)
        if aead is None:
            keyring.ensure((subject,))
            aead = keyring.aead(subject)
            if aead is None:
                raise PatientErased("the patient is erased: no personal data is stored for them")
        for name in fields:
            if name in state:
                state[name] = seal_tree(aead, subject, state[name])

    def preload(self, stored_events: Iterable[StoredEvent]) -> None:
        """Bring the keys of the patients whose tokens these stored events hold into the key
        ring in one query, before they are decoded one by one (a batch's aggregates, a page):
        otherwise each patient met for the first time costs its own query. Nothing when the
        states are encrypted or compressed as a whole (keys are then loaded as met)."""
        keyring = self.keyring
        if keyring is None or self.cipher is not None or self.compressor is not None:
            return
        found: set[str] = set()
        for stored in stored_events:
            state = stored.state
            stored_subjects(state if isinstance(state, bytes) else bytes(state), found)
        if found:
            keyring.load(found)

    def stored_state(self, originator_id: UUID, version: int, topic: str, plain: bytes) -> bytes:
        """The transcoder's bytes as stored at that place (compressed, encrypted)."""
        state = plain
        if self.compressor:
            state = self.compressor.compress(state)
        if isinstance(self.cipher, PlacedCipher):
            state = self.cipher.encrypt(state, place(originator_id, version, topic))
        elif self.cipher:
            state = self.cipher.encrypt(state)
        return state

    def plain_state(
        self, originator_id: UUID, version: int, topic: str, state: bytes, position: int | None
    ) -> bytes:
        """The state as the transcoder wrote it (decrypted, decompressed), or DamagedEvent."""
        try:
            if self.cipher:
                if isinstance(self.cipher, PlacedCipher):
                    state = self.cipher.decrypt(state, place(originator_id, version, topic))
                else:
                    state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
        except Exception as e:
            raise DamagedEvent(
                originator_id=originator_id,
                version=version,
                topic=topic,
                position=position,
                reason=str(e) or type(e).__name__,
            ) from None
        return state if isinstance(state, bytes) else bytes(state)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        oid = stored_event.originator_id
        oid = oid if isinstance(oid, UUID) else UUID(str(oid))
        version, topic = stored_event.originator_version, stored_event.topic
        position = getattr(stored_event, "id", None)
        state = self.plain_state(oid, version, topic, stored_event.state, position)
        try:
            cls = resolve_topic(topic)
            event_state: dict[str, Any] = self.transcoder.decode(state)
        except Exception as e:
            raise DamagedEvent(
                originator_id=oid,
                version=version,
                topic=topic,
                position=position,
                reason=f"does not decode ({type(e).__name__})",
            ) from None
        if self.keyring is not None and STORED_MARK in state:
            keyring = self.keyring
            for name, value in event_state.items():
                event_state[name] = open_value(keyring, value)
        event_state["originator_id"] = oid
        event_state["originator_version"] = version
        class_version = getattr(cls, "class_version", 1)
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        domain_event = object.__new__(cls)
        domain_event.__dict__.update(event_state)
        return domain_event


MAPPER_TOPIC = f"{PlacedMapper.__module__}:{PlacedMapper.__qualname__}"
CIPHER_TOPIC = f"{PlacedCipher.__module__}:{PlacedCipher.__qualname__}"

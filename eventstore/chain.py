"""The hash chain over the stored log: pure functions, no I/O.

Each stored event has a *digest* of what identifies and carries it, and a *link* that chains
it to the one before::

    digest(e)  = SHA-256("jiayi.event.v1" 0x00 | originator id (16 bytes) | version (8)
                         | len(topic) (4) | topic (UTF-8) | state (the bytes as stored))
    link(p)    = SHA-256(link(previous row) | position p (8) | digest(row at p))
    link(none) = GENESIS

The digest does not depend on the position, so a row moved elsewhere is recognised by it
(swapped, reordered); the link does, so a row deleted, inserted or renumbered breaks the
chain at the row after it. State is covered as stored (ciphertext when encrypted), so the
chain is verified without any key and erasing a key later leaves it intact.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from hashlib import sha256
from typing import NamedTuple
from uuid import UUID

GENESIS = sha256(b"jiayi.chain.genesis.v1").digest()
#: What every digest starts with (``recorders`` also computes it in SQL, on PostgreSQL).
EVENT_PREFIX = b"jiayi.event.v1\x00"
_Q = struct.Struct(">q")
_I = struct.Struct(">I")


def covered(originator_id: bytes, version: int, topic: str, state: bytes) -> bytes:
    """What a digest covers after :data:`EVENT_PREFIX` (``originator_id`` as 16 bytes): the
    one definition, which PostgreSQL's ``uuid_send || int8send || int4send || convert_to ||
    state`` also produces (``audit.verify``, ``recorders.damaged_among``)."""
    t = topic.encode()
    return originator_id + _Q.pack(version) + _I.pack(len(t)) + t + state


def event_digest(originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    return sha256(EVENT_PREFIX + covered(originator_id.bytes, version, topic, state)).digest()


def link(previous: bytes, position: int, digest: bytes) -> bytes:
    return sha256(previous + _Q.pack(position) + digest).digest()


class Link(NamedTuple):
    """One event's place in the chain."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    digest: bytes
    hash: bytes


def extend(previous: bytes, rows: Iterable[tuple[int, UUID, int, str, bytes]]) -> Iterator[Link]:
    """The links of ``rows`` (position, originator id, version, topic, state), in position
    order, after a chain whose last link is ``previous``."""
    for position, originator_id, version, topic, state in rows:
        digest = event_digest(originator_id, version, topic, state)
        previous = link(previous, position, digest)
        yield Link(position, originator_id, version, topic, digest, previous)

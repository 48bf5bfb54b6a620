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


def event_digest(originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    t = topic.encode()
    return sha256(
        b"".join(
            (
                EVENT_PREFIX,
                originator_id.bytes,
                version.to_bytes(8, "big", signed=True),
                len(t).to_bytes(4, "big"),
                t,
                state,
            )
        )
    ).digest()


def link(previous: bytes, position: int, digest: bytes) -> bytes:
    return sha256(previous + position.to_bytes(8, "big") + digest).digest()


class Link(NamedTuple):
    """One row of the chain table."""

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
        t = topic.encode()
        digest = sha256(
            EVENT_PREFIX + originator_id.bytes + _Q.pack(version) + _I.pack(len(t)) + t + state
        ).digest()
        previous = sha256(previous + _Q.pack(position) + digest).digest()
        yield Link(position, originator_id, version, topic, digest, previous)

"""An event that is not as it was recorded, named wherever it is met."""

from __future__ import annotations

from uuid import UUID


class DamagedEvent(Exception):
    """A stored event that cannot be trusted: its bytes no longer match the chain's digest
    (changed, moved), it is not in the chain (inserted), or it cannot be decrypted or decoded.

    It names the place (position when known, aggregate, version, topic) and what is wrong, never
    the event's content. Readers stop at it rather than act on it: the API answers a 500 problem
    without data, the projection runner stops and ``/ready`` says why, the Kafka consumer
    dead-letters what touches that aggregate and goes on with the others."""

    def __init__(
        self,
        *,
        originator_id: UUID,
        version: int,
        topic: str,
        reason: str,
        position: int | None = None,
    ) -> None:
        self.position = position
        self.originator_id = originator_id
        self.version = version
        self.topic = topic
        self.reason = reason
        where = f"position {position}, " if position is not None else ""
        super().__init__(
            f"damaged event ({where}aggregate {originator_id} version {version}, {topic}): "
            f"{reason}; run `jiayi audit verify`"
        )

    def place(self, position: int | None = None) -> str:
        """Where it is, for a log line or an operator's message (never its content):
        ``position 12, aggregate <id> version 2, topic <topic>``; ``position`` when the
        exception has none (looked up by the caller)."""
        found = self.position if self.position is not None else position
        where = f"position {found}" if found is not None else "position unknown"
        return f"{where}, aggregate {self.originator_id} version {self.version}, topic {self.topic}"

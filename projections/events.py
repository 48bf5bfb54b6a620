"""Reading the one ordered log: pages of notifications, decoded only as far as views need.

Views store ids as 32-character hex, dates as ISO text and moments as UTC ISO text with
microseconds (so text order is time order on both stores). The fast decoder reads the stored
JSON directly (after the cipher and compressor, when configured) and keeps transcoded values
in their stored text form instead of building ``UUID``/``datetime`` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import Notification

log = logging.getLogger(__name__)

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a moment within a day of ``datetime``'s range whose UTC instant
    falls outside it (``0001-01-01T00:30:00+01:00``) is clamped to the range's end instead of
    raising ``OverflowError``. Such a value is nonsense, but the event carrying it is a fact
    the views must still show (skipping it would leave later events about the same
    referral or contract dangling), and a reader that raised would fail on that batch for
    ever. Clamping is deterministic and keeps text order, so a rebuild still equals the views
    built batch by batch."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        clamped = _EARLIEST if moment.year == datetime.min.year else _LATEST
        log.warning("moment %s is outside the representable range: read as %s", moment, clamped)
        return clamped


def norm_moment(text: str) -> str:
    """A stored ISO moment as UTC text with microseconds: ``2026-06-01T09:00:00.000000+00:00``."""
    if text.endswith("+00:00"):
        if len(text) == 32:
            return text
        if len(text) == 25:
            return text[:19] + ".000000+00:00"
    return _utc(datetime.fromisoformat(text)).isoformat(timespec="microseconds")


def moment_text(moment: datetime) -> str:
    """A timezone-aware ``datetime`` in the views' text form."""
    if moment.tzinfo is None:
        raise ValueError("a moment must carry a timezone")
    return _utc(moment).isoformat(timespec="microseconds")


#: Where :func:`_decode` keeps the local day of ``at`` (before moments become UTC text).
AT_DAY = "_at_day"


def _plain(value: Any) -> Any:
    """A decoded value with eventsourcing's transcoded forms (``{"_type_", "_data_"}``)
    replaced by their stored data; moments normalised by :func:`norm_moment`."""
    kind = type(value)
    if kind is dict:
        tag = value.get("_type_")
        if tag is not None:
            data = value["_data_"]
            return norm_moment(data) if tag == "datetime_iso" else _plain(data)
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    return value


def _decode(state: bytes) -> dict[str, Any]:
    """The stored JSON of one event (orjson is several times faster than json here)."""
    d: dict[str, Any] = orjson.loads(state)
    at = d.get("at")
    if type(at) is dict and at.get("_type_") == "datetime_iso":
        # The use cases record ``at`` in the deployment's zone: its date is the local day.
        d[AT_DAY] = at["_data_"][:10]
    for key, value in d.items():
        kind = type(value)
        if kind is dict or kind is list:
            d[key] = _plain(value)
    return d


@dataclass(slots=True)
class Ev:
    """One event as the views see it."""

    position: int
    #: ``Aggregate.EventName`` (the module part of the stored topic dropped).
    name: str
    #: The aggregate's id as 32-character hex.
    oid: str
    version: int
    #: The event's attributes, transcoded values kept as stored text.
    d: dict[str, Any]

    @property
    def timestamp(self) -> str:
        """When it was recorded (UTC text)."""
        ts: str = self.d["timestamp"]
        return ts

    @property
    def at(self) -> str:
        """When it happened (UTC text); the recording time when the event has no ``at``."""
        at: str | None = self.d.get("at")
        return at if at is not None else self.timestamp

    @property
    def at_day(self) -> str:
        """The day it happened, in the zone it was recorded in (the deployment's)."""
        day: str | None = self.d.get(AT_DAY)
        return day if day is not None else self.at[:10]

    @property
    def staff(self) -> str | None:
        actor = self.d.get("actor")
        return actor["staff_id"] if actor else None

    @property
    def org(self) -> str | None:
        actor = self.d.get("actor")
        return actor["org_id"] if actor else None


class LogReader:
    """Pages of the application's notification log, decoded to :class:`Ev`."""

    def __init__(self, app: Application[Any]) -> None:
        self.recorder = app.recorder
        self.mapper = app.mapper

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def page(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        return self.recorder.select_notifications(after, limit, stop=stop, inclusive_of_start=False)

    def decode(self, notifications: Sequence[Notification]) -> list[Ev]:
        cipher, compressor = self.mapper.cipher, self.mapper.compressor
        out: list[Ev] = []
        append = out.append
        for n in notifications:
            state = n.state
            if cipher:
                state = cipher.decrypt(state)
            if compressor:
                state = compressor.decompress(state)
            if not isinstance(state, bytes):
                state = bytes(state)
            topic = n.topic
            oid = n.originator_id
            append(
                Ev(
                    n.id,
                    topic[topic.index(":") + 1 :],
                    oid.hex if isinstance(oid, UUID) else UUID(str(oid)).hex,
                    n.originator_version,
                    _decode(state),
                )
            )
        return out

"""Reading the one ordered log: pages of notifications, decoded only as far as views need.

Views store ids as 32-character hex, dates as ISO text and moments as UTC ISO text with
microseconds (so text order is time order on both stores). The fast decoder reads the stored
JSON directly (after the cipher and compressor, when configured) and keeps transcoded values
in their stored text form instead of building ``UUID``/``datetime`` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.persistence import Notification, find_id_convertor
from eventsourcing.utils import resolve_topic

from domain.personal import BLIND_INDEX_FIELDS
from eventstore.errors import DamagedEvent
from eventstore.keys import KeyRing
from eventstore.mapper import PlacedMapper
from eventstore.personal import START

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


#: How a NUL is written in stored JSON. PostgreSQL's ``text`` cannot hold one; an event may
#: (stored before the HTTP boundary refused control characters, or by another path).
NUL_ESCAPE = b"\\u0000"
#: What the views hold instead of a NUL (on both stores, so rebuilds compare equal).
NUL_STANDIN = "\ufffd"


def _without_nul(value: Any) -> Any:
    """``value`` with every NUL in its texts (keys too) replaced by :data:`NUL_STANDIN`."""
    kind = type(value)
    if kind is str:
        return value.replace("\x00", NUL_STANDIN)
    if kind is dict:
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if kind is list:
        return [_without_nul(v) for v in value]
    return value


def _decode(state: bytes) -> dict[str, Any]:
    """The stored JSON of one event (orjson is several times faster than json here). Every
    view is written from what this returns, so no stored value can stop a view's writer: a NUL
    (found as its escape in the bytes: about 0.7 us for a 500-byte event, orjson's decode of it
    about 2.5 us) becomes U+FFFD."""
    data: dict[str, Any] = orjson.loads(state)
    if NUL_ESCAPE in state:
        data = _without_nul(data)
    at = data.get("at")
    if type(at) is dict and at.get("_type_") == "datetime_iso":
        # The use cases record ``at`` in the deployment's zone: its date is the local day.
        data[AT_DAY] = at["_data_"][:10]
    for key, value in data.items():
        kind = type(value)
        if kind is dict or kind is list:
            data[key] = _plain(value)
    return data


def event_class(aggregate: type[Aggregate], name: str) -> type[DomainEvent]:
    """The event class ``name`` declared in ``aggregate`` (``@event("Name")``).

    Projections name the events they handle with it, so an event class renamed or removed
    fails when the projections are imported, not silently when old events are read."""
    found = vars(aggregate).get(name)
    if not (isinstance(found, type) and issubclass(found, DomainEvent)):
        raise LookupError(f"{aggregate.__qualname__} declares no event {name!r}")
    return found


@dataclass(slots=True)
class Ev:
    """One event as the views see it."""

    position: int
    #: ``Aggregate.EventName``: the qualified name of the class the stored topic resolves to.
    name: str
    #: The aggregate's id as 32-character hex.
    aggregate_id: str
    version: int
    #: The event's attributes in their current form (upcast when stored by an older class
    #: version), transcoded values kept as stored text.
    data: dict[str, Any]
    #: The domain event class the stored topic resolves to (what projections dispatch on).
    event_type: type[DomainEvent]

    @property
    def timestamp(self) -> str:
        """When it was recorded (UTC text)."""
        ts: str = self.data["timestamp"]
        return ts

    @property
    def at(self) -> str:
        """When it happened (UTC text); the recording time when the event has no ``at``."""
        at: str | None = self.data.get("at")
        return at if at is not None else self.timestamp

    @property
    def at_day(self) -> str:
        """The day it happened, in the zone it was recorded in (the deployment's)."""
        day: str | None = self.data.get(AT_DAY)
        return day if day is not None else self.at[:10]

    @property
    def staff(self) -> str | None:
        actor = self.data.get("actor")
        return actor["staff_id"] if actor else None

    @property
    def org(self) -> str | None:
        actor = self.data.get("actor")
        return actor["org_id"] if actor else None


@dataclass(frozen=True, slots=True)
class EventKind:
    """What a stored topic stands for, resolved once per topic."""

    event_type: type[DomainEvent]
    #: ``Aggregate.EventName`` of the class (also when an old topic names a moved class).
    name: str
    #: The class's ``class_version`` (1 unless it declares one): events stored by an older
    #: version are upcast before the views read them.
    class_version: int
    #: Personal fields the views find patients by: each read adds ``<field>_index``, the
    #: field's blind index (see :meth:`LogReader.index`).
    indexed: tuple[str, ...] = ()

    @staticmethod
    def of(topic: str) -> EventKind:
        event_type = resolve_topic(topic)
        if not (isinstance(event_type, type) and issubclass(event_type, DomainEvent)):
            raise TypeError(f"stored topic {topic!r} names {event_type!r}, not an event class")
        return EventKind(
            event_type,
            event_type.__qualname__,
            getattr(event_type, "class_version", 1),
            BLIND_INDEX_FIELDS.get(event_type, ()),
        )


class LogReader:
    """Pages of the application's notification log, decoded to :class:`Ev`.

    Stored topics are resolved with the library's ``resolve_topic`` (so an old topic given to
    ``register_topic`` reaches the moved class) once per topic and reader. Events stored by an
    older version of their class take the slow path of :meth:`upcast`; all others are read
    straight from their stored JSON.
    """

    def __init__(self, app: Application[Any]) -> None:
        self.recorder = app.recorder
        self.mapper = cast(PlacedMapper, app.mapper)
        #: The patients' data keys (``None`` on a store without personal-data keys).
        self.keyring: KeyRing | None = getattr(self.mapper, "keyring", None)
        self.kinds: dict[str, EventKind] = {}

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def page(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        return self.recorder.select_notifications(after, limit, stop=stop, inclusive_of_start=False)

    def kind(self, topic: str) -> EventKind:
        found = self.kinds.get(topic)
        if found is None:
            found = self.kinds[topic] = EventKind.of(topic)
        return found

    def decode(self, notifications: Sequence[Notification]) -> list[Ev]:
        mapper = self.mapper
        plain = mapper.cipher is not None or mapper.compressor is not None
        kinds = self.kinds
        out: list[Ev] = []
        append = out.append
        indexed: list[tuple[EventKind, dict[str, Any]]] = []
        for n in notifications:
            state = n.state
            oid = n.originator_id
            if not isinstance(oid, UUID):
                oid = UUID(str(oid))
            topic = n.topic
            if plain:
                state = mapper.plain_state(oid, n.originator_version, topic, state, n.id)
            elif not isinstance(state, bytes):
                state = bytes(state)
            kind = kinds.get(topic) or self.kind(topic)
            try:
                data = _decode(state)
            except (ValueError, AttributeError, TypeError):
                raise DamagedEvent(
                    originator_id=oid,
                    version=n.originator_version,
                    topic=topic,
                    position=n.id,
                    reason="does not decode",
                ) from None
            if kind.class_version > 1:
                stored_version = data.pop("class_version", 1)
                if stored_version < kind.class_version:
                    data = _decode(self.upcast(kind, state, stored_version, n))
            if kind.indexed:
                indexed.append((kind, data))
            append(
                Ev(
                    n.id,
                    kind.name,
                    oid.hex,
                    n.originator_version,
                    data,
                    kind.event_type,
                )
            )
        for kind, data in indexed:
            self.index(kind, data)
        return out

    def index(self, kind: EventKind, data: dict[str, Any]) -> None:
        """``<field>_index`` for each indexed field of an event stored before personal data
        was sealed (its value in plain text): its blind index, so such patients are found as
        they always were. A sealed value is not opened here: its blind index was kept beside
        the patient's key when it was stored (``eventstore.keys``), and goes with it."""
        keyring = self.keyring
        for name in kind.indexed:
            value = data.get(name)
            data[f"{name}_index"] = (
                keyring.blind_index(value)
                if keyring is not None
                and isinstance(value, str)
                and value
                and not value.startswith(START)
                else None
            )

    def upcast(
        self, kind: EventKind, state: bytes, stored_version: int, stored: Notification
    ) -> bytes:
        """An event stored by an older class version, in its current stored form.

        As in the library's ``Mapper.to_domain_event``: the transcoder decodes the state, the
        originator's id and version are added, and the class's ``upcast_v<n>_v<n+1>`` methods
        run in order; the result is encoded again by the same transcoder (without the
        originator fields, as the current class would have stored it)."""
        cls = kind.event_type
        event_state: dict[str, Any] = self.mapper.transcoder.decode(state)
        event_state.pop("class_version", None)
        convert = find_id_convertor(cls, cast(Hashable, type(stored.originator_id)))
        event_state["originator_id"] = convert(stored.originator_id)
        event_state["originator_version"] = stored.originator_version
        for version in range(stored_version, kind.class_version):
            getattr(cls, f"upcast_v{version}_v{version + 1}")(event_state)
        del event_state["originator_id"], event_state["originator_version"]
        return self.mapper.transcoder.encode(event_state)

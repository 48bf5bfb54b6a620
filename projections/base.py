"""What every projection is: tables it owns, and a fold of events into their rows.

A projection reads events and its own rows (through :class:`Rows`), never aggregates. The
runner hands it a batch; the rows it changed are written with the batch's position in one
transaction. ``Rows`` keeps a cache of committed rows between batches (dropped on failure),
and when a view is rebuilt from an empty store every row lives in memory until the bulk load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from eventsourcing.domain import Aggregate, DomainEvent

from projections.events import Ev, event_class
from projections.store import Table, ViewStore

Row = dict[str, Any]
_DELETED = None
#: Committed rows kept between batches, per projection (cleared past this size).
CACHE_LIMIT = 500_000


class Rows:
    """A projection's rows during a batch: reads through a cache, collects the changes."""

    def __init__(self, store: ViewStore, tables: dict[str, Table], empty: bool = False) -> None:
        self.store = store
        self.tables = tables
        #: True while rebuilding into empty tables: a miss means "no such row".
        self.empty = empty
        self.cache: dict[str, dict[Any, Row | None]] = {t: {} for t in tables}
        self.dirty: dict[str, dict[Any, Row | None]] = {t: {} for t in tables}
        self.appended: dict[str, list[tuple[Any, ...]]] = {t: [] for t in tables}

    def get(self, table: str, key: Any) -> Row | None:
        cache = self.cache[table]
        try:
            return cache[key]
        except KeyError:
            pass
        row = None if self.empty else self.store.load(self.tables[table], key)
        cache[key] = row
        return row

    def put(self, table: str, row: Row) -> None:
        key = self.tables[table].key(row)
        self.cache[table][key] = row
        self.dirty[table][key] = row

    def delete(self, table: str, key: Any) -> None:
        self.cache[table][key] = _DELETED
        self.dirty[table][key] = _DELETED

    def append(self, table: str, row: Row) -> None:
        """An insert-only row (a timeline entry): never read back during the fold."""
        self.appended[table].append(self.tables[table].values(row))

    # --- writing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the collected changes (inside the caller's transaction)."""
        for name, table in self.tables.items():
            if self.appended[name]:
                self.store.bulk_insert(table, self.appended[name])
                self.appended[name] = []
            changed = self.dirty[name]
            if not changed:
                continue
            gone = [k for k, r in changed.items() if r is None]
            live = [table.values(r) for r in changed.values() if r is not None]
            if gone and not self.empty:
                self.store.delete(table, gone)
            if live:
                self.store.upsert(table, live)
            self.dirty[name] = {}

    def bulk_load(self) -> None:
        """After a rebuild's fold: every live cached row into the empty tables."""
        for name, table in self.tables.items():
            if self.appended[name]:
                self.store.bulk_insert(table, self.appended[name])
                self.appended[name] = []
            self.store.bulk_insert(
                table, (table.values(r) for r in self.cache[name].values() if r is not None)
            )
            self.dirty[name] = {}

    def committed(self) -> None:
        self.empty = False
        if sum(len(c) for c in self.cache.values()) > CACHE_LIMIT:
            self.forget()

    def forget(self) -> None:
        """Drop cached and uncommitted rows (after a failed transaction or a restart)."""
        for name in self.tables:
            self.cache[name] = {}
            self.dirty[name] = {}
            self.appended[name] = []


Handler = Callable[[Any, Ev, Rows], None]
H = TypeVar("H", bound=Handler)
#: Where :func:`handles` notes, on a handler method, the event classes it handles.
_HANDLED = "_handles_events"


def handles(aggregate: type[Aggregate], *names: str) -> Callable[[H], H]:
    """Make the decorated method the projection's handler of ``aggregate``'s events ``names``.

    The names are resolved to the event classes when the projection is defined (at import):
    an event class renamed or removed fails there. Dispatch is by the class a stored topic
    resolves to, so a class moved with ``register_topic(old_topic, cls)`` still reaches it."""
    events = tuple(event_class(aggregate, name) for name in names)

    def register(method: H) -> H:
        setattr(method, _HANDLED, (*getattr(method, _HANDLED, ()), *events))
        return method

    return register


class Projection:
    """Subclasses declare ``name`` and ``tables``, and handler methods with :func:`handles`."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    #: Event class -> handler (collected from the methods decorated with :func:`handles`).
    handlers: ClassVar[dict[type[DomainEvent], Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[DomainEvent], Handler] = {}
        for klass in reversed(cls.__mro__):
            own: set[type[DomainEvent]] = set()
            for attribute in vars(klass).values():
                for event_type in getattr(attribute, _HANDLED, ()):
                    if event_type in own:
                        raise TypeError(
                            f"{klass.__qualname__} handles {event_type.__qualname__} twice"
                        )
                    own.add(event_type)
                    handlers[event_type] = attribute
        cls.handlers = handlers

    def table_map(self) -> dict[str, Table]:
        return {t.name: t for t in self.tables}

    def apply(self, ev: Ev, rows: Rows) -> None:
        handler = self.handlers.get(ev.event_type)
        if handler is not None:
            handler(self, ev, rows)

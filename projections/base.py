"""What every projection is: tables it owns, and a fold of events into their rows.

A projection reads events and its own rows (through :class:`Rows`), never aggregates. The
runner hands it a batch; the rows it changed are written with the batch's position in one
transaction. ``Rows`` keeps a cache of committed rows between batches (dropped on failure),
and when a view is rebuilt from an empty store every row lives in memory until the bulk load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from projections.events import Ev
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


class Projection:
    """Subclasses declare ``name``, ``tables`` and ``handlers`` (event name -> method)."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    #: Event name (``Aggregate.Event``) -> method name.
    handles: ClassVar[dict[str, str]]

    def table_map(self) -> dict[str, Table]:
        return {t.name: t for t in self.tables}

    def apply(self, ev: Ev, rows: Rows) -> None:
        method = self.handles.get(ev.name)
        if method is not None:
            getattr(self, method)(ev, rows)

"""Where a set of views lives (live or as of a moment), and how to open it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from projections.store import ViewStore


@dataclass(frozen=True)
class Location:
    """A SQLite file, or a PostgreSQL schema (``None``: the server's default)."""

    sqlite_path: Path | None = None
    postgres_params: dict[str, str] | None = None
    schema: str | None = None
    #: Where as-of replays go (a folder for SQLite files).
    replay_dir: Path | None = None

    def open(self) -> ViewStore:
        if self.postgres_params is not None:
            return ViewStore.postgres_(self.postgres_params, self.schema)
        assert self.sqlite_path is not None
        return ViewStore.sqlite(self.sqlite_path)

    def as_of(self, moment: str) -> Location:
        """A separate store for views replayed up to ``moment`` (UTC text), one per moment."""
        stamp = moment.replace("-", "").replace(":", "").replace(".", "")[:21].lower()
        if self.postgres_params is not None:
            base = self.schema or "public"
            name = f"{base}_asof_{stamp}"
            if len(name) > 63:
                name = f"asof_{hashlib.sha1(name.encode()).hexdigest()[:20]}_{stamp}"
            return replace(self, schema=name)
        folder = self.replay_dir or (self.sqlite_path or Path(".")).parent / "asof"
        return replace(self, sqlite_path=folder / f"views-{stamp}.sqlite3")

"""Where a set of views lives (live or as of a moment), and how to open it."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from projections.store import ViewStore

#: Longest PostgreSQL identifier (bytes; schema names here are ASCII).
PG_NAME_MAX = 63


def moment_stamp(moment: str) -> str:
    """A moment's UTC text as a name part: ``2026-05-01T00:00:00.000000+00:00`` ->
    ``20260501t000000000000``."""
    return moment.replace("-", "").replace(":", "").replace(".", "")[:21].lower()


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

    # --- as-of replays: one store per build, named by moment and a generation ------------

    @property
    def replay_folder(self) -> Path:
        """SQLite: the folder of the replay files."""
        return self.replay_dir or (self.sqlite_path or Path(".")).parent / "asof"

    def replay_prefix(self) -> str:
        """What every replay store of these views is named with (a schema's or a file's
        name): ``<schema>_asof_`` (``asof_<hash>_`` for a long schema name), ``views-``."""
        if self.postgres_params is None:
            return "views-"
        base = self.schema or "public"
        if len(base) + len("_asof_") + 21 + 7 <= PG_NAME_MAX:
            return f"{base}_asof_"
        return f"asof_{hashlib.sha1(base.encode()).hexdigest()[:12]}_"

    def replay_name(self, moment: str) -> str:
        """A new place for a replay of ``moment`` (UTC text): a name no other build uses,
        so a store being dropped and one being built never share it."""
        generation = uuid.uuid4().hex[:6]
        name = f"{self.replay_prefix()}{moment_stamp(moment)}_{generation}"
        return name if self.postgres_params is not None else f"{name}.sqlite3"

    def replay(self, name: str) -> Location:
        """The replay store called ``name`` (from :meth:`replay_name`)."""
        if self.postgres_params is not None:
            return replace(self, schema=name)
        return replace(self, sqlite_path=self.replay_folder / name)

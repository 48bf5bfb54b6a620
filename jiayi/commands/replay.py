"""``jiayi replay --as-of <moment>``: the views as they stood then, in a separate store."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from tqdm import tqdm

from eventstore.errors import DamagedEvent
from jiayi.bootstrap import build_application, view_location
from jiayi.commands.projections import damaged
from jiayi.settings import Settings
from projections.events import LogReader, moment_text
from projections.views import ViewQueries


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="rebuild the views from events recorded up to a moment (for auditors)"
    )
    p.add_argument(
        "--as-of",
        required=True,
        type=datetime.fromisoformat,
        help="ISO 8601 moment with a timezone, e.g. 2026-05-01T00:00:00+08:00",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    reader = LogReader(app)
    location = view_location(settings)
    queries = ViewQueries(location, reader, timezone=settings.zone())
    moment = moment_text(args.as_of)
    try:
        try:
            with tqdm(total=reader.max_position(), unit="event", disable=None) as bar:
                store = queries.replay(moment, progress=bar.update)
        except DamagedEvent as exc:
            return damaged("replay", exc, "nothing was replayed")
        target = location.as_of(moment)
        where = target.schema if target.postgres_params else target.sqlite_path
        print(f"views as of {moment} are in {where} (position {min(store.positions().values())})")
        store.close()
    finally:
        queries.close()
        app.close()
    return 0

"""``jiayi replay --as-of <moment>``: the views as they stood then, in a separate store.

It shares the replay stores with the servers (``projections.replays``): a moment already
replayed is reused, one being built elsewhere is waited for, and the budget
(``JIAYI_ASOF_MAX_STORES``, ``JIAYI_ASOF_MAX_BYTES``) holds afterwards."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from tqdm import tqdm

from eventstore.errors import DamagedEvent
from jiayi.bootstrap import build_application, replay_budget, view_location
from jiayi.commands.projections import damaged
from jiayi.settings import Settings
from projections.events import LogReader, moment_text
from projections.replays import Replays, in_process


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
    moment = moment_text(args.as_of)
    try:
        with tqdm(total=reader.max_position(), unit="event", disable=None) as bar:
            replays = Replays(
                location, in_process(reader, progress=bar.update), replay_budget(settings)
            )
            try:
                with replays.use(moment) as store:
                    position = min(store.positions().values())
                    entry = replays.catalogue.entries(moment=moment)[0]
            finally:
                replays.close()
    except DamagedEvent as exc:
        return damaged("replay", exc, "nothing was replayed")
    finally:
        app.close()
    where = location.replay(entry.place)
    place = where.schema if where.postgres_params else where.sqlite_path
    print(f"views as of {moment} are in {place} (position {position})")
    return 0

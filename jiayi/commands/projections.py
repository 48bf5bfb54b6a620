"""``jiayi projections rebuild [VIEW ...]``: rebuild views from the log, with progress."""

from __future__ import annotations

import argparse
from typing import Any

from tqdm import tqdm

from jiayi.bootstrap import build_application, rebuild_views, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import PROJECTIONS, Runner, RunnerThread


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("projections", help="rebuild or catch up views")
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser("rebuild", help="rebuild all views (or the ones named) from the log")
    r.add_argument("views", nargs="*", help=", ".join(c.name for c in PROJECTIONS))
    r.set_defaults(func=run_rebuild)
    c = actions.add_parser("catch-up", help="process the log up to its end and stop")
    c.set_defaults(func=run_catch_up)
    f = actions.add_parser("run", help="follow the log and keep the views current (a process)")
    f.add_argument("--poll", type=float, default=0.2, help="seconds between looks at the log")
    f.set_defaults(func=run_follow)


def run_rebuild(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    total = LogReader(app).max_position()
    app.close()
    with tqdm(total=total, unit="event", disable=None) as bar:
        summary = rebuild_views(settings, args.views or None, progress=bar.update)
    for line in summary.lines():
        print(line)
    return 0


def run_catch_up(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    store = view_location(settings).open()
    try:
        n = Runner(store, LogReader(app)).catch_up()
        print(f"processed {n:,} events")
    finally:
        store.close()
        app.close()
    return 0


def run_follow(args: argparse.Namespace) -> int:
    """The projection runner as its own process; restarts itself after failures."""
    import signal
    import threading

    settings: Settings = args.settings
    app = build_application(settings)
    location = view_location(settings)
    runner = RunnerThread(location.open, LogReader(app), poll=args.poll).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print("following the log; SIGTERM or Ctrl-C stops")
    done.wait()
    runner.stop()
    app.close()
    return 0

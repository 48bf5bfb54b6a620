"""``jiayi projections rebuild [VIEW ...]``: rebuild views from the log, with progress.

A damaged event in the log stops ``rebuild`` (nothing rebuilt: the views stay as they were)
and ``catch-up`` (the views stay just before it) with one line naming the event and exit
status 3; ``run`` stops before it and looks again slowly (:class:`RunnerThread`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from eventstore.errors import DamagedEvent
from jiayi import metrics
from jiayi.bootstrap import (
    PROJECTIONS_DUTY,
    build_application,
    build_duty,
    rebuild_views,
    view_location,
)
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import PROJECTIONS, Runner, RunnerThread
from runtime.logs import announce


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


#: Exit status of a command stopped by a damaged event.
DAMAGED = 3


def damaged(command: str, exc: DamagedEvent, outcome: str) -> int:
    """One line on stderr naming the damaged event (never its content); the exit status."""
    print(
        f"jiayi {command}: damaged event at {exc.place()}: {exc.reason}; {outcome}",
        file=sys.stderr,
    )
    return DAMAGED


def run_rebuild(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    total = LogReader(app).max_position()
    app.close()
    try:
        with tqdm(total=total, unit="event", disable=None) as bar:
            summary = rebuild_views(settings, args.views or None, progress=bar.update)
    except DamagedEvent as exc:
        return damaged("projections rebuild", exc, "nothing was rebuilt")
    for line in summary.lines():
        print(line)
    return 0


def run_catch_up(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    store = view_location(settings).open()
    runner = Runner(store, LogReader(app))
    n = 0
    try:
        while done := runner.run_once():
            n += done
    except DamagedEvent as exc:
        return damaged(
            "projections catch-up",
            exc,
            f"processed {n:,} events; the views stop before it, at position {runner.position()}",
        )
    finally:
        store.close()
        app.close()
    print(f"processed {n:,} events")
    return 0


def run_follow(args: argparse.Namespace) -> int:
    """The projection runner as its own process; restarts itself after failures. One runner
    per event store works (the projections duty); another stands by and takes over."""
    import signal
    import threading

    settings: Settings = args.settings
    app = build_application(settings)
    location = view_location(settings)
    reader = LogReader(app)
    duty = build_duty(settings, PROJECTIONS_DUTY)
    runner = RunnerThread(location.open, reader, poll=args.poll, leadership=duty)
    served = metrics.serve(settings)
    stop_metrics = metrics.watch_views(location, reader) if served is not None else None
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    runner.start()
    announce("following the log (one runner leads, others stand by); SIGTERM or Ctrl-C stops")
    done.wait()
    runner.stop()
    if served is not None and stop_metrics is not None:
        stop_metrics()
        served.stop()
    app.close()
    return 0

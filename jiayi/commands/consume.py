"""``jiayi consume``: apply partner events from Kafka, exactly once, until stopped."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from audit.seals import start_schedule
from jiayi import metrics
from jiayi.bootstrap import build_inbound_consumer, ensure_topics
from jiayi.settings import Settings
from projections.events import LogReader
from runtime.logs import announce


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "consume", help="apply partner events from Kafka (CloudEvents) as commands"
    )
    p.add_argument("--idle-exit", type=float, default=None, help="stop after N idle seconds")
    p.set_defaults(func=run)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    ensure_topics(settings)
    inbound = build_inbound_consumer(settings)
    stop = stop_on_signals()
    seals = start_schedule(settings)
    served = metrics.serve(settings)
    if served is not None:
        metrics.watch("log", metrics.log_head(LogReader(inbound.app)))
    announce(
        f"consuming {settings.partner_topic_prefix}<organisation>.in"
        f" as group {settings.consumer_group}"
    )
    inbound.run(stop, idle_exit=args.idle_exit)
    announce(f"applied {inbound.applied}, dead-lettered {inbound.dead}")
    inbound.consumer.close()
    if seals is not None:
        seals.stop()
    if served is not None:
        served.stop()
    inbound.app.close()
    return 0

"""``jiayi publish``: relay every domain event to Kafka in log order, until stopped."""

from __future__ import annotations

import argparse
from typing import Any

from audit.seals import start_schedule
from jiayi import metrics
from jiayi.bootstrap import build_relay, ensure_topics
from jiayi.commands.consume import stop_on_signals
from jiayi.settings import Settings
from runtime.logs import announce


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "publish", help="publish domain events to Kafka (keyed by patient)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    ensure_topics(settings)
    relay = build_relay(settings)
    stop = stop_on_signals()
    seals = start_schedule(settings, to_kafka=True)
    served = metrics.serve(settings)
    if served is not None:
        metrics.watch("relay", metrics.relay_source(relay))
    announce(
        f"publishing to {settings.partner_topic_prefix}<organisation>.out"
        + (f" and {settings.platform_topic}" if settings.platform_topic else "")
        + f" from position {relay.position()}"
    )
    relay.run(stop)
    announce(f"published {relay.published}")
    if seals is not None:
        seals.stop()
    if served is not None:
        served.stop()
    relay.app.close()
    return 0

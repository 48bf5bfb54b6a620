"""The ``jiayi`` command line. Each subcommand lives in ``jiayi/commands/<name>.py``.

The settings are read and checked before any command starts (``args.settings``): a bad one
stops the command with one line naming the variable and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from eventstore.keys import KeyRingError
from jiayi.settings import InvalidSettings, Settings
from runtime import logs

#: Modules under ``jiayi.commands`` with ``register(subparsers)``; each sets ``func``.
COMMANDS = (
    "demo",
    "projections",
    "replay",
    "serve",
    "tokens",
    "consume",
    "publish",
    "partners",
    "audit",
    "patients",
    "keys",
)
#: Long-running processes log at INFO (leadership, failures, requests); the others only what
#: needs attention.
LONG_RUNNING = ("serve", "consume", "publish", "projections")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jiayi", description="jiayi (家医): family-doctor referral and care coordination"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"jiayi.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.settings = Settings()
    except InvalidSettings as exc:
        for line in exc.lines:
            print(f"jiayi {args.command}: invalid setting {line}", file=sys.stderr)
        return 2
    # the one logging setup of every command (JIAYI_LOG_FORMAT)
    level = logging.INFO if args.command in LONG_RUNNING else logging.WARNING
    logs.configure(args.settings.log_format, level)
    try:
        result = args.func(args)
    except KeyRingError as exc:  # a missing, unreadable or wrong master key file
        print(f"jiayi {args.command}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""``jiayi demo``: build a synthetic city through the application and print a summary."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from tqdm import tqdm

from jiayi.bootstrap import build_application
from jiayi.demo import generate
from jiayi.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("demo", help="build a synthetic city")
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        help="the day the city is built up to (default: today)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    where = "PostgreSQL" if settings.uses_postgres else f"SQLite {settings.sqlite_path}"
    print(f"building a city of {args.patients} residents (seed {args.seed}) in {where}")
    with tqdm(total=args.patients, unit="patient", disable=None) as bar:
        summary = generate(app, args.patients, args.seed, args.today, progress=bar.update)
    for line in summary.lines():
        print("  " + line)
    app.close()
    return 0

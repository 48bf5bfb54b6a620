"""``jiayi audit seal|verify|key``: provable history (see audit/ and ARCHITECTURE.md)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit import seals as sealing
from audit.verify import Report, add_access_log, record, verify
from jiayi.bootstrap import build_application
from jiayi.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "audit", help="seal the hash chain, verify the log against it, show the public key"
    )
    actions = p.add_subparsers(dest="action", required=True)

    seal = actions.add_parser("seal", help="sign the chain's head now (seal table, log, topic)")
    seal.add_argument("--force", action="store_true", help="seal even if the head is sealed")
    seal.set_defaults(func=run_seal)

    check = actions.add_parser(
        "verify", help="walk the log and name every broken link; exit 1 when any"
    )
    check.add_argument("--from", dest="start", type=int, default=0, help="after this position")
    check.add_argument("--to", dest="stop", type=int, help="up to this position")
    check.add_argument(
        "--seals",
        action="append",
        default=[],
        metavar="FILE|kafka",
        help="seals held outside the database: a seal log file, or `kafka` (the audit topic); "
        "repeatable (the configured seal log is always read when it exists)",
    )
    check.add_argument(
        "--public-key", type=Path, help="the signing key's public key (PEM); default: derived"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_verify)

    key = actions.add_parser("key", help="print the public key auditors verify seals with")
    key.add_argument("--new", type=Path, metavar="FILE", help="make a new signing key in FILE")
    key.set_defaults(func=run_key)


def _prepare(settings: Settings) -> None:
    """The event store's tables (and the chain of a log recorded before it) exist."""
    build_application(settings).close()


def run_seal(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    try:
        key = sealing.signing_key(settings, create=True)
    except sealing.NoSigningKey as e:
        print(f"jiayi audit seal: {e}", file=sys.stderr)
        return 2
    _prepare(settings)
    sealer = sealing.Sealer(settings, key, publish=sealing.kafka_publisher(settings))
    try:
        seal = sealer.seal(force=args.force)
    finally:
        sealer.close()
    if seal is None:
        print("nothing to seal (the log is empty, or its head is sealed already)")
    else:
        print(f"sealed position {seal.position} at {seal.sealed_at} (key {seal.key_id})")
    return 0


def _public(settings: Settings, path: Path | None) -> Any:
    if path is not None:
        return sealing.public_key(path)
    try:
        return sealing.signing_key(settings).public_key()
    except sealing.NoSigningKey:
        return None


def run_verify(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    _prepare(settings)
    elsewhere: list[sealing.Seal] = []
    sources = list(args.seals)
    default_log = sealing.seal_log_path(settings)
    if default_log.exists() and str(default_log) not in sources:
        sources.append(str(default_log))
    for source in sources:
        try:
            if source == "kafka":
                elsewhere += sealing.read_topic(settings)
            else:
                elsewhere += sealing.read_log(Path(source))
        except (OSError, ValueError) as e:
            print(f"jiayi audit verify: cannot read seals from {source}: {e}", file=sys.stderr)
            return 2
    try:
        public = _public(settings, args.public_key)
    except (OSError, ValueError) as e:
        print(f"jiayi audit verify: cannot read the public key: {e}", file=sys.stderr)
        return 2
    store = sealing.open_store(settings)
    started = datetime.now(UTC)
    try:
        report = verify(
            store,
            start=args.start,
            stop=args.stop,
            elsewhere=list(sealing.unique(elsewhere)),
            public=public,
        )
        if args.start == 0 and args.stop is None:
            add_access_log(report, settings)
        record(store, report, "cli", started)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    return 0 if report.ok else 1


def print_report(report: Report) -> None:
    rate = report.events / report.seconds if report.seconds else 0.0
    print(
        f"verified positions {report.start + 1}..{report.end}: {report.events:,} events, "
        f"{report.seals} seals, {report.seconds:.2f} s ({rate:,.0f} events/s)"
    )
    if report.access_rows:
        print(f"read access log: {report.access_rows:,} rows")
    if not report.seals_trusted:
        print("warning: no public key, seal signatures not checked (--public-key)")
    if report.ok:
        print("OK: every event is as recorded")
        return
    print(f"BROKEN: {len(report.findings)} finding(s)")
    print(f"{'position':>10}  {'kind':<12} {'aggregate':<36}  {'event':<28} detail")
    for f in report.findings:
        print(
            f"{f.position:>10}  {f.kind:<12} {f.aggregate or '-':<36}  "
            f"{f.event_type or '-':<28} {f.detail}"
        )


def run_key(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    if args.new is not None:
        if args.new.exists():
            print(f"jiayi audit key: {args.new} exists; not overwritten", file=sys.stderr)
            return 2
        key = sealing.create_key(args.new)
    else:
        try:
            key = sealing.signing_key(settings, create=True)
        except sealing.NoSigningKey as e:
            print(f"jiayi audit key: {e}", file=sys.stderr)
            return 2
    print(sealing.public_pem(key.public_key()), end="")
    return 0

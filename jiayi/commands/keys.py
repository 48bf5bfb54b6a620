"""``jiayi keys create|rotate``: the master key that wraps each patient's data key.

``create FILE`` writes a new random master key (mode 0600; never overwrites). ``rotate --to
FILE`` rewraps every data key with the key in FILE (created when missing), in one transaction,
touching no event; afterwards restart every process with ``JIAYI_MASTER_KEY_FILE=FILE`` (one
still holding the old key refuses keys wrapped by the new one, naming both) and keep the old
file until they all have.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eventstore.keys import KeyRing, KeyRingError, MasterKey
from jiayi.bootstrap import open_keyring
from jiayi.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("keys", help="create or rotate the master key")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="write a new master key file")
    create.add_argument("file", type=Path)
    create.set_defaults(func=run_create)
    rotate = actions.add_parser("rotate", help="rewrap every data key with another master key")
    rotate.add_argument("--to", type=Path, required=True, help="the new master key's file")
    rotate.set_defaults(func=run_rotate)


def run_create(args: argparse.Namespace) -> int:
    try:
        key = MasterKey.create(args.file)
    except FileExistsError:
        print(f"jiayi keys create: {args.file} exists (never overwritten)", file=sys.stderr)
        return 2
    print(f"master key {key.id} written to {args.file}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    keyring: KeyRing | None = None
    try:
        new = MasterKey.load(args.to) if args.to.exists() else MasterKey.create(args.to)
        keyring = open_keyring(settings)
        count = keyring.rotate(new)
    except KeyRingError as exc:
        print(f"jiayi keys rotate: {exc}", file=sys.stderr)
        return 2
    finally:
        if keyring is not None:
            keyring.close()
    print(
        f"{count} keys rewrapped with master key {new.id} ({args.to}); restart every process "
        f"with JIAYI_MASTER_KEY_FILE={args.to}"
    )
    return 0

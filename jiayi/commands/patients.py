"""``jiayi patients erase ID --reason ...``: erase a patient (an administrator's act).

Records ``Patient.Erased`` (the administrator's staff id, the legal ground, when) and destroys
the patient's data key: their name, resident id number, phone, birth date and the free text
about them no longer open in the events, the views or any as-of replay; partners receive the
erasure on their topics. What they took part in (contracts, referrals, visits) still counts,
anonymous.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from uuid import UUID

from domain.common import ADMINISTRATION, Actor, DomainError
from jiayi.bootstrap import build_application, erase_patient
from jiayi.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("patients", help="erase a patient")
    actions = p.add_subparsers(dest="action", required=True)
    erase = actions.add_parser(
        "erase", help="erase a patient: record who and why, destroy their data key"
    )
    erase.add_argument("patient_id", type=UUID)
    erase.add_argument(
        "--reason", required=True, help="the legal ground (e.g. retention period ended)"
    )
    erase.add_argument("--staff", required=True, help="the administrator's staff id (recorded)")
    erase.set_defaults(func=run_erase)


def run_erase(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    app = build_application(settings)
    try:
        position = erase_patient(
            app, args.patient_id, reason=args.reason, actor=Actor(args.staff, ADMINISTRATION)
        )
    except DomainError as exc:  # unknown patient, no reason given
        print(f"jiayi patients erase: {exc.message}", file=sys.stderr)
        return 2
    finally:
        app.close()
    print(f"erased {args.patient_id} (log position {position}); their data key is destroyed")
    return 0

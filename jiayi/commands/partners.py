"""``jiayi partners``: partner organisations' access to the Kafka exchange.

    jiayi partners add ORG       SCRAM user partner-ORG, topics <prefix>ORG.in/.out, ACLs;
                                 prints the partner's client settings once
    jiayi partners list          partners known to the broker
    jiayi partners rotate ORG    a new password (printed once); the old one is refused
    jiayi partners remove ORG    revokes the ACLs and deletes the credential (topics kept)
    jiayi partners services      the consumer's and relay's users and ACLs (jiayi-consumer,
                                 jiayi-relay); passwords of users made now printed once
                                 (--rotate: new ones; --passwords-from-env: the deployment's)

Acts as the Kafka administrator: ``JIAYI_KAFKA_ADMIN_USERNAME`` / ``_PASSWORD`` (or
``JIAYI_KAFKA_USERNAME`` / ``_PASSWORD``). See ``jiayi/kafka_access.py`` for the ACL layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from uuid import UUID

from jiayi import kafka_access
from jiayi.bootstrap import build_admin
from jiayi.settings import Settings

#: With ``services --passwords-from-env``: where a deployment keeps the services' passwords.
PASSWORD_VARIABLES = {
    kafka_access.CONSUMER: "JIAYI_KAFKA_CONSUMER_PASSWORD",
    kafka_access.RELAY: "JIAYI_KAFKA_RELAY_PASSWORD",
}


def _org(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError("ORG must be an organisation id (a UUID)") from None


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "partners", help="partner organisations' Kafka credentials, topics and ACLs"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (
        ("add", "create the partner's credential, topics and ACLs; print its settings once"),
        ("rotate", "replace the partner's password; print its settings once"),
        ("remove", "revoke the partner's access (its topics are kept)"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("org", type=_org, metavar="ORG", help="organisation id")
    actions.add_parser("list", help="partners known to the broker")
    s = actions.add_parser("services", help="jiayi-consumer / jiayi-relay users and ACLs")
    s.add_argument("--rotate", action="store_true", help="replace both passwords")
    s.add_argument(
        "--passwords-from-env",
        action="store_true",
        help=f"set the passwords in {', '.join(PASSWORD_VARIABLES.values())} (prints none)",
    )
    p.set_defaults(func=run)


def _show_settings(args: argparse.Namespace, values: dict[str, str]) -> None:
    if args.json:
        print(json.dumps(values))
        return
    print("# shown once: jiayi does not keep the password")
    for key, value in values.items():
        print(f"{key}={value}")


def run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    try:
        admin = build_admin(settings)
    except ValueError as exc:
        print(f"jiayi partners: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "add":
            made = kafka_access.add_partner(admin, settings, args.org)
            _show_settings(args, kafka_access.client_settings(settings, args.org, made))
        elif args.action == "rotate":
            made = kafka_access.rotate_partner(admin, args.org)
            _show_settings(args, kafka_access.client_settings(settings, args.org, made))
        elif args.action == "remove":
            kafka_access.remove_partner(admin, settings, args.org)
            print(f"removed partner-{args.org}: credential deleted, ACLs revoked, topics kept")
        elif args.action == "list":
            partners = kafka_access.list_partners(admin, settings)
            if args.json:
                print(json.dumps([{**vars(p), "org": str(p.org)} for p in partners]))
            for p in [] if args.json else partners:
                missing = [t for t, ok in ((p.inbound, p.inbound_exists),) if not ok]
                missing += [t for t, ok in ((p.outbound, p.outbound_exists),) if not ok]
                note = f"  (missing: {', '.join(missing)})" if missing else ""
                print(f"{p.org}  {p.username}  {p.inbound}  {p.outbound}{note}")
        elif args.action == "services":
            passwords = None
            if args.passwords_from_env:
                passwords = {u: os.environ.get(v, "") for u, v in PASSWORD_VARIABLES.items()}
                if not all(passwords.values()):
                    print("jiayi partners: set " + " and ".join(PASSWORD_VARIABLES.values()))
                    return 2
            created = kafka_access.setup_services(
                admin, settings, rotate=args.rotate, passwords=passwords
            )
            values = {c.username: c.password for c in created}
            if args.json:
                print(json.dumps(values))
            elif passwords is not None:
                print("consumer and relay ACLs in place; passwords set from the environment")
            else:
                print("# consumer and relay ACLs in place; passwords made now (shown once):")
                for user, password in values.items():
                    print(f"{user}={password}")
    except kafka_access.AccessError as exc:
        print(f"jiayi partners: {exc}", file=sys.stderr)
        return 1
    finally:
        admin.close()
    return 0

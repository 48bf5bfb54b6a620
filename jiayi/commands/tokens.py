"""``jiayi tokens issue|list|revoke``: bearer tokens for the API (only their hashes are stored)."""

from __future__ import annotations

import argparse
from typing import Any
from uuid import UUID

from api.database import SideStore
from api.tokens import ORG_ROLES, Role, TokenStore
from domain.common import DomainError
from domain.organisations import Organisation
from jiayi.bootstrap import build_application
from jiayi.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("tokens", help="issue, list and revoke API tokens")
    actions = p.add_subparsers(dest="action", required=True)

    issue = actions.add_parser("issue", help="issue a token (printed once)")
    issue.add_argument("--role", required=True, choices=[str(r) for r in Role])
    issue.add_argument("--staff", required=True, help="the person's staff id (recorded on writes)")
    issue.add_argument("--org", type=UUID, help="organisation id (center or hospital staff)")
    issue.add_argument("--district", help="district (coordinators)")
    issue.set_defaults(func=run_issue)

    listing = actions.add_parser("list", help="list tokens (never the secrets)")
    listing.set_defaults(func=run_list)

    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=run_revoke)


def _store(settings: Settings) -> TokenStore:
    return TokenStore(SideStore(settings))


def run_issue(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    role = Role(args.role)
    district = args.district
    if role in ORG_ROLES:
        if args.org is None:
            print(f"a {role} token needs --org")
            return 2
        app = build_application(settings)
        try:
            org = app.load(Organisation, args.org)
        except DomainError:
            print(f"no organisation {args.org}")
            return 2
        finally:
            app.close()
        if org.kind != ORG_ROLES[role]:
            print(f"{org.name} is a {org.kind}; a {role} token needs a {ORG_ROLES[role]}")
            return 2
        district = org.district
    elif role == Role.COORDINATOR and not district:
        print("a coordinator token needs --district")
        return 2
    token, principal = _store(settings).issue(args.staff, role, args.org, district)
    print(f"token id: {principal.token_id} ({role}, staff {args.staff})")
    print(token)
    return 0


def run_list(args: argparse.Namespace) -> int:
    for t in _store(args.settings).list():
        state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
        print(
            f"{t.token_id}  {t.role:<15} staff={t.staff_id} org={t.org_id or '-'} "
            f"district={t.district or '-'} created={t.created_at} {state}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    if _store(args.settings).revoke(args.token_id):
        print(f"revoked {args.token_id}")
        return 0
    print(f"no active token {args.token_id}")
    return 1

"""Domain errors are typed: each kind has its own stable, machine-readable code."""

from __future__ import annotations

import re

import domain.contracts
import domain.followups
import domain.organisations
import domain.patients
import domain.quotas
import domain.referrals
import domain.teams
from domain.common import DomainError

MODULES = (
    domain.contracts,
    domain.followups,
    domain.organisations,
    domain.patients,
    domain.quotas,
    domain.referrals,
    domain.teams,
)


def all_errors() -> set[type[DomainError]]:
    found: set[type[DomainError]] = set()
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending += cls.__subclasses__()
    return found


def test_every_domain_error_has_its_own_kebab_case_code_and_a_docstring() -> None:
    assert MODULES  # importing them registers their errors
    errors = all_errors()
    codes = [e.code for e in errors]
    assert len(errors) > 20
    assert len(codes) == len(set(codes)), sorted(codes)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c) for c in codes)
    assert all((e.__doc__ or "").strip() for e in errors)


def test_not_found_and_not_permitted_kinds_are_marked() -> None:
    for error in all_errors():
        assert error.not_found == issubclass(error, domain.common.NotFound)
        assert error.forbidden == issubclass(error, domain.common.NotPermitted)

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


def test_every_absent_or_not_yours_error_answers_one_404_and_one_dead_letter() -> None:
    from api.errors import NOT_FOUND_PROBLEM, domain_problem
    from consumers.inbound import _failure

    hidden = [e for e in all_errors() if e.not_found or e.forbidden]
    assert len(hidden) > 5
    answers = [domain_problem(e(f"no {e.__name__} 42", id="42")) for e in hidden]
    assert all(a == NOT_FOUND_PROBLEM for a in answers)
    assert NOT_FOUND_PROBLEM.status == 404 and "42" not in NOT_FOUND_PROBLEM.detail
    letters = {_failure(e(f"no {e.__name__} 42"), ("src", "id")) for e in hidden}
    assert {(f.code, f.message, f.exception) for f in letters} == {
        ("not-found", "nothing with that id is visible to you", "domain.common.NotFound")
    }

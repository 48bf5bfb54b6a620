"""Contracts: a first term of one year, renewals of 1-3 years, expiry by date, termination
with a reason, a change of team, households signing together."""

from __future__ import annotations

from datetime import date

import pytest

from domain.common import Actor, InvalidValue, NotPermitted, stable_id
from domain.contracts import Contract, ContractNotActive, ContractNotDue, RenewalTooLong
from domain.patients import TransferRequired
from tests.unit.story import (
    CENTER,
    GP,
    OTHER_CENTER,
    OTHER_CENTER_GP,
    OTHER_TEAM,
    PATIENT,
    TEAM,
    TODAY,
    at,
    days,
    recorded,
)

CONTRACT = stable_id("unit", "contract")
START = date(2026, 3, 1)


def contract(start: date = START) -> Contract:
    return Contract.sign(
        CONTRACT,
        patient_id=PATIENT,
        team_id=TEAM,
        center_id=CENTER,
        package="basic",
        start=start,
        actor=GP,
        at=at(start),
    )


def test_the_first_term_is_one_year_to_the_day_before() -> None:
    c = contract()
    assert (c.start, c.end, c.status) == (START, date(2027, 2, 28), "active")
    assert c.is_active_on(date(2027, 2, 28))
    assert not c.is_active_on(date(2027, 3, 1))
    assert recorded(c) == ["Signed"]


def test_a_contract_is_signed_at_the_teams_own_center_for_a_known_package() -> None:
    with pytest.raises(NotPermitted):
        Contract.sign(
            CONTRACT,
            patient_id=PATIENT,
            team_id=TEAM,
            center_id=CENTER,
            package="basic",
            start=START,
            actor=OTHER_CENTER_GP,
            at=at(START),
        )
    with pytest.raises(InvalidValue):
        Contract.sign(
            CONTRACT,
            patient_id=PATIENT,
            team_id=TEAM,
            center_id=CENTER,
            package="platinum",
            start=START,
            actor=GP,
            at=at(START),
        )


def test_household_members_contracts_carry_the_household() -> None:
    household = stable_id("unit", "household")
    signed = [
        Contract.sign(
            stable_id("c", p),
            patient_id=p,
            team_id=TEAM,
            center_id=CENTER,
            package="basic",
            start=START,
            actor=GP,
            at=at(START),
            household_id=household,
        )
        for p in (stable_id("p", 1), stable_id("p", 2))
    ]
    assert {c.household_id for c in signed} == {household}


@pytest.mark.parametrize(
    ("years", "new_end"),
    [(1, date(2028, 2, 28)), (2, date(2029, 2, 28)), (3, date(2030, 2, 28))],
)
def test_a_renewal_runs_one_to_three_years_from_the_current_end(years: int, new_end: date) -> None:
    c = contract()
    assert c.renew(years, GP, at(date(2027, 2, 28))) == new_end  # on the term's last day
    assert (c.end, c.renewals) == (new_end, 1)
    assert recorded(c) == ["Signed", "Renewed"]


@pytest.mark.parametrize("years", [0, 4, -1])
def test_a_renewal_of_other_lengths_is_refused(years: int) -> None:
    with pytest.raises(InvalidValue):
        contract().renew(years, GP, at(date(2027, 2, 1)))


def test_renewals_never_carry_the_end_more_than_three_years_past_the_renewal_day() -> None:
    """The finding: a 3-year renewal, then a 1-year renewal 40 days into the new term, moved
    the end four years out, sidestepping the refusal of a 4-year renewal."""
    c = contract()  # 2026-03-01 .. 2027-02-28
    assert c.renew(3, GP, at(date(2027, 2, 28))) == date(2030, 2, 28)
    with pytest.raises(RenewalTooLong) as refused:
        c.renew(1, GP, at(date(2027, 4, 9)))
    assert refused.value.field == "years"
    assert "2031-02-28" in refused.value.message and "2030-04-09" in refused.value.message
    assert (c.end, c.renewals) == (date(2030, 2, 28), 1)
    # a year before the end, one more year is within three years of that day
    assert c.renew(1, GP, at(date(2029, 2, 28))) == date(2031, 2, 28)


def test_an_early_renewal_ends_within_three_years_of_its_day() -> None:
    c = contract()  # ends 2027-02-28
    with pytest.raises(RenewalTooLong):
        c.renew(3, GP, at(date(2027, 2, 1)))  # would end 2030-02-28, after 2030-02-01
    assert c.renew(2, GP, at(date(2027, 2, 1))) == date(2029, 2, 28)


def test_a_contract_past_its_last_day_is_signed_anew_not_renewed() -> None:
    c = contract()
    c.renew(1, GP, at(date(2027, 2, 28)))  # the last day still counts
    with pytest.raises(ContractNotActive):
        c.renew(1, GP, at(date(2028, 2, 29)))


def test_a_contract_expires_only_after_its_last_day() -> None:
    c = contract()
    with pytest.raises(ContractNotDue):
        c.expire(date(2027, 2, 28), GP, at(date(2027, 2, 28)))
    c.expire(date(2027, 3, 1), GP, at(date(2027, 3, 1)))
    assert c.status == "expired"
    with pytest.raises(ContractNotActive):
        c.renew(1, GP, at(date(2027, 3, 1)))
    assert recorded(c) == ["Signed", "Expired"]


def test_termination_needs_a_reason_and_the_contracts_center() -> None:
    c = contract()
    with pytest.raises(InvalidValue):
        c.terminate("  ", GP, at(TODAY))
    with pytest.raises(NotPermitted):
        c.terminate("居民迁出", OTHER_CENTER_GP, at(TODAY))
    c.terminate("居民迁出", GP, at(TODAY))
    assert c.status == "terminated"
    with pytest.raises(ContractNotActive):
        c.terminate("again", GP, at(TODAY))
    with pytest.raises(ContractNotActive):
        c.expire(date(2030, 1, 1), GP, at(TODAY))


def test_a_contract_changes_team_within_its_center_in_one_step() -> None:
    c = contract()
    same_center_team = stable_id("unit", "second team")
    c.change_team(same_center_team, CENTER, "就近", GP, at(TODAY))
    assert (c.team_id, c.center_id) == (same_center_team, CENTER)
    changed = c.collect_events()[-1]
    assert changed.previous_team_id == TEAM  # type: ignore[attr-defined]
    with pytest.raises(InvalidValue):
        c.change_team(same_center_team, CENTER, "again", GP, at(TODAY))


def test_another_centers_team_takes_a_contract_only_through_a_released_transfer() -> None:
    """F2 (issue #11): a center of another district moved a patient to its own team."""
    c = contract()
    # the new center alone may not (and is told nothing: not its contract)
    with pytest.raises(NotPermitted):
        c.change_team(OTHER_TEAM, OTHER_CENTER, "居民搬家", OTHER_CENTER_GP, at(TODAY))
    # the old center alone may not either: the other center has to ask for the patient
    with pytest.raises(TransferRequired):
        c.change_team(OTHER_TEAM, OTHER_CENTER, "居民搬家", GP, at(TODAY))
    assert recorded(c) == ["Signed"]
    c.change_team(OTHER_TEAM, OTHER_CENTER, "转出", GP, at(TODAY), transfer_released=True)
    assert (c.team_id, c.center_id) == (OTHER_TEAM, OTHER_CENTER)
    third_center = Actor("gp-3", stable_id("unit", "third center"))
    with pytest.raises(NotPermitted):
        c.change_team(TEAM, CENTER, "back", third_center, at(days(1)))
    with pytest.raises(NotPermitted):
        c.renew(1, GP, at(TODAY))  # the new center owns it now


def test_an_ended_contract_does_not_change_team() -> None:
    c = contract()
    c.terminate("自愿解约", GP, at(TODAY))
    with pytest.raises(ContractNotActive):
        c.change_team(OTHER_TEAM, CENTER, "x", GP, at(TODAY))

"""Contracts (签约): a patient signs with a family-doctor team for a service package."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.common import (
    Actor,
    DomainError,
    InvalidValue,
    NotPermitted,
    add_years,
    ensure_not_before,
    term_end,
)
from domain.patients import TransferRequired

FIRST_TERM_YEARS = 1
RENEWAL_YEARS = (1, 2, 3)
PACKAGES = ("basic", "chronic_disease", "elderly", "maternal_child", "tcm", "disability")


class ContractStatus(StrEnum):
    ACTIVE = "active"
    TERMINATED = "terminated"
    EXPIRED = "expired"


class ContractNotActive(DomainError):
    """Only an active contract can be renewed, changed or terminated."""

    code = "contract-not-active"


class RenewalTooLong(InvalidValue):
    """A renewal never carries a contract's end more than 3 years past the renewal's day
    (renewals run 1-3 years; two renewals in a row cannot add up to more)."""

    code = "renewal-too-long"


class ContractNotDue(DomainError):
    """A contract expires only after its last day."""

    code = "contract-not-expired-yet"


class Contract(Aggregate):
    """One signed agreement: first term 1 year, renewals of 1-3 years each."""

    @event("Signed")
    def __init__(
        self,
        id: UUID,
        patient_id: UUID,
        team_id: UUID,
        center_id: UUID,
        package: str,
        start: date,
        end: date,
        household_id: UUID | None,
        actor: Actor,
        at: datetime,
    ) -> None:
        self.patient_id = patient_id
        self.team_id = team_id
        self.center_id = center_id
        self.package = package
        self.start = start
        self.end = end
        self.household_id = household_id
        self.status = ContractStatus.ACTIVE
        self.renewals = 0
        #: When the last step (signing, renewal, team change, end) happened: each step
        #: follows the ones before it.
        self.last_step_at = at

    @classmethod
    def sign(
        cls,
        id: UUID,
        *,
        patient_id: UUID,
        team_id: UUID,
        center_id: UUID,
        package: str,
        start: date,
        actor: Actor,
        at: datetime,
        household_id: UUID | None = None,
    ) -> Contract:
        if actor.org_id != center_id:
            raise NotPermitted("contracts are signed at the team's own community center")
        if package not in PACKAGES:
            raise InvalidValue(f"unknown service package {package!r}", field="package")
        return cls(
            id=id,
            patient_id=patient_id,
            team_id=team_id,
            center_id=center_id,
            package=package,
            start=start,
            end=term_end(start, FIRST_TERM_YEARS),
            household_id=household_id,
            actor=actor,
            at=at,
        )

    def is_active_on(self, day: date) -> bool:
        return self.status == ContractStatus.ACTIVE and self.start <= day <= self.end

    def renew(self, years: int, actor: Actor, at: datetime) -> date:
        """Extend by 1-3 years from the current end; returns the new last day.

        The new last day is at most 3 years after the day of the renewal (``at``), so a
        renewal made early, or on top of another renewal, is shorter or refused. A contract
        whose last day has passed is over: it is not renewed but signed anew.
        """
        self._ensure_center(actor)
        if self.status != ContractStatus.ACTIVE or at.date() > self.end:
            raise ContractNotActive(f"contract is {self.status} and ran until {self.end}")
        if years not in RENEWAL_YEARS:
            raise InvalidValue("a renewal runs 1 to 3 years", field="years")
        self._ensure_after_last_step("renewal", at)
        new_end = add_years(self.end, years)
        latest = add_years(at.date(), max(RENEWAL_YEARS))
        if new_end > latest:
            raise RenewalTooLong(
                f"a {years}-year renewal would end the contract on {new_end}, more than "
                f"{max(RENEWAL_YEARS)} years after today ({at.date()}); the latest end is {latest}",
                field="years",
                end=new_end.isoformat(),
                latest_end=latest.isoformat(),
            )
        self._renewed(years=years, end=new_end, actor=actor, at=at)
        return new_end

    @event("Renewed")
    def _renewed(self, years: int, end: date, actor: Actor, at: datetime) -> None:
        self.end = end
        self.renewals += 1
        self.last_step_at = at

    def terminate(self, reason: str, actor: Actor, at: datetime) -> None:
        self._ensure_center(actor)
        if self.status != ContractStatus.ACTIVE:
            raise ContractNotActive(f"contract is {self.status}")
        if not reason.strip():
            raise InvalidValue("termination needs a reason", field="reason")
        self._ensure_after_last_step("termination", at)
        self._terminated(reason=reason.strip(), actor=actor, at=at)

    @event("Terminated")
    def _terminated(self, reason: str, actor: Actor, at: datetime) -> None:
        self.status = ContractStatus.TERMINATED
        self.last_step_at = at

    def expire(self, on: date, actor: Actor, at: datetime) -> None:
        """Record expiry after the last day of the term."""
        self._ensure_center(actor)
        if self.status != ContractStatus.ACTIVE:
            raise ContractNotActive(f"contract is {self.status}")
        if on <= self.end:
            raise ContractNotDue(f"contract runs until {self.end}")
        self._ensure_after_last_step("expiry", at)
        self._expired(on=on, actor=actor, at=at)

    @event("Expired")
    def _expired(self, on: date, actor: Actor, at: datetime) -> None:
        self.status = ContractStatus.EXPIRED
        self.last_step_at = at

    def change_team(
        self,
        team_id: UUID,
        center_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime,
        transfer_released: bool = False,
    ) -> None:
        """Move the contract to another team of its center (one step, by that center), or to a
        team of another center once the patient's transfer there is released
        (``transfer_released``: the new center asked, this one let the patient go)."""
        self._ensure_center(actor)
        if self.status != ContractStatus.ACTIVE:
            raise ContractNotActive(f"contract is {self.status}")
        if team_id == self.team_id:
            raise InvalidValue("the contract is already with that team", field="team_id")
        if center_id != self.center_id and not transfer_released:
            raise TransferRequired(
                "a team of another center takes the contract when that center requests the "
                "patient's transfer and this one releases it"
            )
        self._ensure_after_last_step("team change", at)
        self._team_changed(
            team_id=team_id,
            center_id=center_id,
            previous_team_id=self.team_id,
            reason=reason,
            actor=actor,
            at=at,
        )

    @event("TeamChanged")
    def _team_changed(
        self,
        team_id: UUID,
        center_id: UUID,
        previous_team_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime,
    ) -> None:
        self.team_id = team_id
        self.center_id = center_id
        self.last_step_at = at

    def _ensure_after_last_step(self, step: str, at: datetime) -> None:
        ensure_not_before(at, self.last_step_at, step, "contract's previous step")

    def _ensure_center(self, actor: Actor) -> None:
        if actor.org_id != self.center_id:
            raise NotPermitted("only the contract's community center may change it")

"""Contracts (签约): sign (one patient or a household), renew, terminate, expire, change team."""

from __future__ import annotations

from uuid import UUID, uuid4

from fastapi import APIRouter

from api.deps import ApplicationDep, CenterStaff
from api.openapi import COMMAND_ERRORS, done
from api.schemas import (
    ChangeTeam,
    CommandResult,
    ExpireContract,
    HouseholdResult,
    RenewContract,
    SignContract,
    SignHousehold,
    TerminateContract,
)

router = APIRouter(prefix="/contracts", tags=["contracts"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def sign(body: SignContract, who: CenterStaff, app: ApplicationDep) -> CommandResult:
    """A patient signs with one of your center's teams for a service package (first term 1 year)."""
    return done(
        app.sign_contract(
            body.patient_id,
            team_id=body.team_id,
            package=body.package,
            start=body.start,
            actor=who.actor,
            id=body.id,
            at=body.at,
        )
    )


@router.post(
    "/households", status_code=201, response_model=HouseholdResult, responses=COMMAND_ERRORS
)
def sign_household(body: SignHousehold, who: CenterStaff, app: ApplicationDep) -> HouseholdResult:
    """Members of one household sign together: all of them, or none."""
    household = body.household_id or uuid4()
    outcomes = app.sign_household(
        body.patient_ids,
        team_id=body.team_id,
        package=body.package,
        start=body.start,
        actor=who.actor,
        household_id=household,
        at=body.at,
    )
    return HouseholdResult(
        id=household,
        position=max(o.position for o in outcomes),
        contracts=[o.id for o in outcomes],
    )


@router.post("/{contract_id}/renew", response_model=CommandResult, responses=COMMAND_ERRORS)
def renew(
    contract_id: UUID, body: RenewContract, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """Extend an active contract by 1-3 years."""
    return done(app.renew_contract(contract_id, years=body.years, actor=who.actor, at=body.at))


@router.post("/{contract_id}/terminate", response_model=CommandResult, responses=COMMAND_ERRORS)
def terminate(
    contract_id: UUID, body: TerminateContract, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """End an active contract early, with a reason."""
    return done(
        app.terminate_contract(contract_id, reason=body.reason, actor=who.actor, at=body.at)
    )


@router.post("/{contract_id}/expire", response_model=CommandResult, responses=COMMAND_ERRORS)
def expire(
    contract_id: UUID, body: ExpireContract, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """Record that a contract ran past its last day."""
    return done(app.expire_contract(contract_id, actor=who.actor, at=body.at))


@router.post("/{contract_id}/change-team", response_model=CommandResult, responses=COMMAND_ERRORS)
def change_team(
    contract_id: UUID, body: ChangeTeam, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """Move a contract to another team of your center. A team of another center takes the
    patient by a transfer (``POST /patients/{id}/transfer``): 409 ``transfer-required``."""
    return done(
        app.change_contract_team(
            contract_id, team_id=body.team_id, reason=body.reason, actor=who.actor, at=body.at
        )
    )

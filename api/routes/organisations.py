"""Organisations: registration (administrators), departments, resident counts."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from api.deps import Administrator, ApplicationDep, CenterStaff, HospitalStaff
from api.openapi import COMMAND_ERRORS, done
from api.schemas import AddDepartment, CommandResult, RecordResidents, RegisterOrganisation

router = APIRouter(prefix="/organisations", tags=["organisations"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def register_organisation(
    body: RegisterOrganisation, who: Administrator, app: ApplicationDep
) -> CommandResult:
    """Register a community health center or a 2nd/3rd-level hospital."""
    return done(
        app.register_organisation(
            body.kind,
            name=body.name,
            district=body.district,
            actor=who.actor,
            level=body.level,
            id=body.id,
            at=body.at,
        )
    )


@router.post("/{org_id}/departments", response_model=CommandResult, responses=COMMAND_ERRORS)
def add_department(
    org_id: UUID, body: AddDepartment, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """A hospital opens a department that accepts referrals, with its contact person."""
    return done(
        app.add_department(
            org_id,
            code=body.code,
            name=body.name,
            actor=who.actor,
            referral_contact=body.referral_contact,
            at=body.at,
        )
    )


@router.post("/{org_id}/residents", response_model=CommandResult, responses=COMMAND_ERRORS)
def record_residents(
    org_id: UUID, body: RecordResidents, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """A center records its registered residents (the denominators of signing rates)."""
    return done(
        app.record_residents(
            org_id,
            total=body.total,
            key_population=body.key_population,
            as_of=body.as_of,
            actor=who.actor,
            at=body.at,
        )
    )

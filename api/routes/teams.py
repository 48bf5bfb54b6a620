"""Family-doctor teams: forming, members; the teams list and a team's workload."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import (
    ApplicationDep,
    AsOfDep,
    CenterReader,
    CenterStaff,
    PageDep,
    QueriesDep,
    SettingsDep,
)
from api.openapi import COMMAND_ERRORS, QUERY_ERRORS, done, example_response, paged, visible
from api.schemas import (
    TEAM_ID,
    AddMember,
    CleanText,
    CommandResult,
    Day,
    FormTeam,
    ItemsPage,
    RemoveMember,
)

router = APIRouter(prefix="/teams", tags=["teams"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def form_team(body: FormTeam, who: CenterStaff, app: ApplicationDep) -> CommandResult:
    """Your community center forms a family-doctor team."""
    return done(
        app.form_team(who.actor.org_id, name=body.name, actor=who.actor, id=body.id, at=body.at)
    )


@router.post("/{team_id}/members", response_model=CommandResult, responses=COMMAND_ERRORS)
def add_member(
    team_id: UUID, body: AddMember, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """A GP, nurse or public-health doctor of the center, or a specialist from a hospital, joins."""
    return done(
        app.add_team_member(
            team_id,
            staff_id=body.staff_id,
            name=body.name,
            role=body.role,
            org_id=body.org_id or who.actor.org_id,
            actor=who.actor,
            at=body.at,
        )
    )


@router.post(
    "/{team_id}/members/{staff_id}/remove", response_model=CommandResult, responses=COMMAND_ERRORS
)
def remove_member(
    team_id: UUID, staff_id: CleanText, body: RemoveMember, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """A member leaves the team."""
    return done(app.remove_team_member(team_id, staff_id=staff_id, actor=who.actor, at=body.at))


@router.get("", response_model=ItemsPage, responses=QUERY_ERRORS)
def teams(who: CenterReader, queries: QueriesDep, page: PageDep) -> ItemsPage:
    """Teams you may see, with their headline workload counts."""
    return paged(queries.teams(who.scope, page), page.limit, page.offset)


@router.get(
    "/{team_id}/workload",
    responses={
        **QUERY_ERRORS,
        **example_response(
            {
                "team_id": TEAM_ID,
                "contracts": {"active": 412},
                "members": [],
                "follow_ups": {"overdue": 3},
            }
        ),
    },
)
def team_workload(
    team_id: UUID,
    who: CenterReader,
    as_of: AsOfDep,
    queries: QueriesDep,
    settings: SettingsDep,
    today: Annotated[Day | None, Query(description="default: today")] = None,
) -> dict[str, Any]:
    """Per team and per member: contracts, referrals, returns and follow-ups (performance pay)."""
    return visible(
        queries.team_workload(who.scope, team_id, today or settings.today(), as_of=as_of)
    )

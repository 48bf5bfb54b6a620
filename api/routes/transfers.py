"""Transfers between centers: the new center asks, naming the patient as they came to it."""

from __future__ import annotations

from fastapi import APIRouter

from api import deps
from api.deps import ApplicationDep, CenterStaff, QueriesDep
from api.openapi import COMMAND_ERRORS, done
from api.schemas import CommandResult, RequestTransfer

router = APIRouter(prefix="/transfers", tags=["patients"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def request_transfer(
    body: RequestTransfer, who: CenterStaff, app: ApplicationDep, queries: QueriesDep
) -> CommandResult:
    """Your center asks to care for a resident of another center, for one of your teams,
    naming them as they came to you (resident id number and name) and citing their recorded
    consent. Without an active contract the patient moves at once (then sign your own);
    otherwise their center releases or declines (``/patients/{id}/transfer/release``). A
    resident you do not identify is answered as an unknown one (404)."""
    return done(
        app.request_transfer(
            deps.identify(queries, body.national_id),
            national_id=body.national_id,
            name=body.name,
            team_id=body.team_id,
            consent=body.consent,
            actor=who.actor,
            at=body.at,
        )
    )

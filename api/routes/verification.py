"""The auditors' view of the hash chain's verification: the last one, and starting one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import ServicesDep, requires
from api.errors import ApiProblem
from api.tokens import Principal, Role
from audit.service import MAX_EVENTS, Verifications

router = APIRouter(prefix="/audit/verification", tags=["audit"])

Auditor = Annotated[Principal, requires(Role.AUDITOR)]


def verifications(svc: ServicesDep) -> Verifications:
    svc.application()  # the event store's tables (the chain, seals, verifications) exist
    return svc.verifications


VerificationsDep = Annotated[Verifications, Depends(verifications)]


class VerificationRequest(BaseModel):
    model_config = {"extra": "forbid"}

    after: int = Field(0, ge=0, le=2**62, description="verify positions after this one")
    limit: int = Field(MAX_EVENTS, ge=1, le=MAX_EVENTS, description="at most this many positions")


@router.get("")
def last_verification(who: Auditor, found: VerificationsDep) -> dict[str, Any]:
    """The last verification of the log against its hash chain and seals (who asked, the
    positions walked, each finding: position, kind, aggregate, event type), and whether one
    is running now."""
    return {"running": found.running, "last": found.last()}


@router.post("", status_code=202)
def start_verification(
    who: Auditor, found: VerificationsDep, body: VerificationRequest | None = None
) -> dict[str, Any]:
    """Start a bounded verification (at most 1,000,000 positions) in the background; its
    report is the next `GET /audit/verification`."""
    body = body or VerificationRequest(after=0, limit=MAX_EVENTS)
    if not found.start(who.staff_id, body.after, body.limit):
        raise ApiProblem(409, "verification-running", "a verification is running already")
    return {"running": True, "after": body.after, "limit": body.limit}

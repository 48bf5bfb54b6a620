"""Worklists: a hospital's referrals awaiting decision; a center's returns and overdue visits."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import CenterReader, HospitalReader, PageDep, QueriesDep, SettingsDep
from api.openapi import QUERY_ERRORS, example_response, paged, visible
from api.schemas import EXAMPLE_ID, PATIENT_ID, Day, ItemsPage

router = APIRouter(prefix="/worklists", tags=["worklists"])


@router.get("/hospitals/{hospital_id}", response_model=ItemsPage, responses=QUERY_ERRORS)
def hospital_worklist(
    hospital_id: UUID, who: HospitalReader, queries: QueriesDep, page: PageDep
) -> ItemsPage:
    """Referrals awaiting decision: urgent and green-channel first, within each the decisions
    past their deadline (`decision_overdue`), then oldest; each with its `decision_due` and the
    form's `diagnoses` (the whole form: `GET /referrals/{id}`)."""
    found = visible(queries.hospital_worklist(who.scope, hospital_id, page))
    return paged(found, page.limit, page.offset)


@router.get(
    "/centers/{center_id}",
    responses={
        **QUERY_ERRORS,
        **example_response(
            {
                "returns_awaiting_acknowledgement": [{"referral_id": EXAMPLE_ID}],
                "overdue_follow_ups": [{"patient_id": PATIENT_ID, "due": "2026-05-01"}],
                "transfers_to_release": [{"patient_id": PATIENT_ID, "consent": "转签同意书 42"}],
                "transfers_requested": [],
            }
        ),
    },
)
def center_worklist(
    center_id: UUID,
    who: CenterReader,
    queries: QueriesDep,
    settings: SettingsDep,
    page: PageDep,
    today: Annotated[Day | None, Query(description="default: today")] = None,
) -> dict[str, Any]:
    """Returns awaiting acknowledgement, overdue follow-ups, and transfer requests: asked of
    the center (release or decline) and asked by it (withdraw)."""
    return visible(queries.center_worklist(who.scope, center_id, today or settings.today(), page))

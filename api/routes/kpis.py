"""KPIs the authorities score teams on (signing, key-population signing, fulfilment, ...)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import AsOfDep, CenterReader, QueriesDep
from api.openapi import QUERY_ERRORS, example_response, visible
from api.schemas import CleanText, Day
from projections.kpis import ensure_period

router = APIRouter(prefix="/kpis", tags=["kpis"])


@router.get(
    "",
    responses={
        **QUERY_ERRORS,
        **example_response(
            {"signing_rate": 0.716, "key_population_signing_rate": 0.86, "fulfilment_rate": 0.91}
        ),
    },
)
def kpis(
    who: CenterReader,
    as_of: AsOfDep,
    queries: QueriesDep,
    start: Annotated[Day, Query(description="first day of the period")],
    end: Annotated[Day, Query(description="last day of the period")],
    center_id: Annotated[UUID | None, Query()] = None,
    district: Annotated[CleanText | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """KPI figures for a center or a district over a period (both days included), within what
    you may see. A period whose last day is before its first is refused (422, naming ``end``)."""
    ensure_period(start, end)
    return visible(
        queries.kpis(who.scope, start, end, center_id=center_id, district=district, as_of=as_of)
    )

"""The read access log, for auditors: who read a patient's data, and a patient's access report.

These reads are recorded too (``access-log``, ``access-report``): the log shows who read it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import Auditor, PageDep, QueriesDep
from api.openapi import QUERY_ERRORS, example_response, paged, visible
from api.schemas import CENTER_ID, PATIENT_ID, ItemsPage
from audit.access import report_csv

router = APIRouter(prefix="/audit", tags=["audit"])

Patient = Annotated[UUID, Query(description="the patient's id", examples=[PATIENT_ID])]

ENTRY_EXAMPLE = {
    "position": 4182,
    "at": "2026-05-20T01:30:00.000000+00:00",
    "staff_id": "gp-0042",
    "org_id": CENTER_ID,
    "org_name": "鼓楼社区卫生服务中心",
    "role": "center_staff",
    "district": "鼓楼区",
    "patient_id": PATIENT_ID,
    "resource": "timeline",
    "rows": 12,
}


@router.get(
    "/access",
    response_model=ItemsPage,
    responses={
        **QUERY_ERRORS,
        **example_response(
            {"items": [ENTRY_EXAMPLE], "limit": 50, "offset": 0, "next_offset": None}
        ),
    },
)
def access(patient: Patient, who: Auditor, queries: QueriesDep, page: PageDep) -> ItemsPage:
    """Who read this patient's data, newest first: staff, organisation, role, what (the
    resource: registry, search, timeline, referral, quota, worklist.*, access-log ...), when
    (UTC) and how many rows."""
    found = visible(queries.access_entries(who.scope, patient, page))
    return paged(found, page.limit, page.offset)


@router.get(
    "/access/report",
    responses={
        **QUERY_ERRORS,
        **example_response(
            {
                "patient": PATIENT_ID,
                "generated_at": "2026-05-21T10:00:00+08:00",
                "reads": [ENTRY_EXAMPLE],
                "readers": [
                    {
                        "staff_id": "gp-0042",
                        "org_id": CENTER_ID,
                        "org_name": "鼓楼社区卫生服务中心",
                        "role": "center_staff",
                        "district": "鼓楼区",
                        "reads": 3,
                        "rows": 25,
                        "first_at": "2026-05-01T01:00:00.000000+00:00",
                        "last_at": "2026-05-20T01:30:00.000000+00:00",
                        "resources": ["registry", "timeline"],
                    }
                ],
            },
            "the report (`format=csv`: one line per read, text/csv)",
        ),
    },
)
def access_report(
    patient: Patient,
    who: Auditor,
    queries: QueriesDep,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
) -> Any:
    """A patient's access report: every recorded read of their data, oldest first, and a
    summary per reader (reads, rows, first and last, resources)."""
    found = visible(queries.access_report(who.scope, patient))
    if format == "json":
        return found
    return Response(
        report_csv(found),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="access-{patient}.csv"'},
    )

"""Two-way referrals (双向转诊): up to a hospital, the hospital's steps, back to the community."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from api import deps
from api.deps import ApplicationDep, AsOfDep, HospitalStaff, QueriesDep, Reader, TeamStaff
from api.openapi import COMMAND_ERRORS, QUERY_ERRORS, done, example_response, visible
from api.schemas import (
    EXAMPLE_ID,
    HOSPITAL_ID,
    PATIENT_ID,
    Accept,
    AcknowledgeReturn,
    CancelReferral,
    CommandResult,
    RecordAdmission,
    RecordArrival,
    Reject,
    RequestReferral,
    ReturnPlan,
    StartReturn,
)

router = APIRouter(prefix="/referrals", tags=["referrals"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def request_referral(body: RequestReferral, who: TeamStaff, app: ApplicationDep) -> CommandResult:
    """The patient's contracted team (its center or a specialist member) refers up (上转)
    with the two-way referral form (转出单): coded diagnoses (初步印象), present illness and
    reason, past history, treatment so far, the referring doctor and a contact number."""
    return done(
        app.request_referral(
            body.patient_id,
            hospital_id=body.hospital_id,
            department=body.department,
            reason=body.reason,
            diagnosis=body.diagnosis or "",
            diagnoses=body.diagnosis_dicts(),
            past_history=body.past_history,
            treatment=body.treatment,
            referring_doctor=body.referring_doctor,
            doctor_phone=body.doctor_phone,
            urgency=body.urgency,
            actor=who.actor,
            id=body.id,
            at=body.at,
            resends=body.resends,
        )
    )


@router.post("/returns", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def start_return(
    body: StartReturn, who: HospitalStaff, app: ApplicationDep, queries: QueriesDep
) -> CommandResult:
    """Your hospital returns a patient it treated without an upward referral (下转), naming
    them as the encounter did (resident id number and name). A patient they do not identify
    is answered as an unknown one (404)."""
    return done(
        app.start_return(
            deps.identify(queries, body.national_id),
            national_id=body.national_id,
            name=body.name,
            hospital_id=who.actor.org_id,
            department=body.department,
            summary=body.summary,
            prescriptions=body.prescription_dicts(),
            rehabilitation=body.rehabilitation,
            follow_up_due=body.follow_up_due,
            actor=who.actor,
            id=body.id,
            at=body.at,
            **body.form(),
        )
    )


@router.post("/{referral_id}/accept", response_model=CommandResult, responses=COMMAND_ERRORS)
def accept(
    referral_id: UUID, body: Accept, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """The hospital addressed accepts the referral."""
    return done(app.accept_referral(referral_id, actor=who.actor, note=body.note, at=body.at))


@router.post("/{referral_id}/reject", response_model=CommandResult, responses=COMMAND_ERRORS)
def reject(
    referral_id: UUID, body: Reject, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """The hospital addressed rejects a referral it has not accepted."""
    return done(
        app.reject_referral(
            referral_id, reason_code=body.reason_code, actor=who.actor, note=body.note, at=body.at
        )
    )


@router.post("/{referral_id}/cancel", response_model=CommandResult, responses=COMMAND_ERRORS)
def cancel(
    referral_id: UUID, body: CancelReferral, who: TeamStaff, app: ApplicationDep
) -> CommandResult:
    """The sending center (or its team) cancels before the patient arrives."""
    return done(app.cancel_referral(referral_id, reason=body.reason, actor=who.actor, at=body.at))


@router.post("/{referral_id}/arrival", response_model=CommandResult, responses=COMMAND_ERRORS)
def arrive(
    referral_id: UUID, body: RecordArrival, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """The referred patient arrived at the hospital."""
    return done(app.record_arrival(referral_id, actor=who.actor, at=body.at))


@router.post("/{referral_id}/admission", response_model=CommandResult, responses=COMMAND_ERRORS)
def admit(
    referral_id: UUID, body: RecordAdmission, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """The patient was admitted to a ward."""
    return done(app.record_admission(referral_id, ward=body.ward, actor=who.actor, at=body.at))


@router.post("/{referral_id}/return", response_model=CommandResult, responses=COMMAND_ERRORS)
def return_to_community(
    referral_id: UUID, body: ReturnPlan, who: HospitalStaff, app: ApplicationDep
) -> CommandResult:
    """Discharge back to the community with a summary, continued prescriptions and a plan."""
    return done(
        app.return_to_community(
            referral_id,
            summary=body.summary,
            prescriptions=body.prescription_dicts(),
            rehabilitation=body.rehabilitation,
            follow_up_due=body.follow_up_due,
            actor=who.actor,
            at=body.at,
            **body.form(),
        )
    )


@router.post("/{referral_id}/acknowledge", response_model=CommandResult, responses=COMMAND_ERRORS)
def acknowledge(
    referral_id: UUID, body: AcknowledgeReturn, who: TeamStaff, app: ApplicationDep
) -> CommandResult:
    """The patient's community center acknowledges the return."""
    return done(app.acknowledge_return(referral_id, actor=who.actor, at=body.at))


REFERRAL_EXAMPLE = {
    "id": EXAMPLE_ID,
    "patient_id": PATIENT_ID,
    "hospital_id": HOSPITAL_ID,
    "department": "cardiology",
    "status": "accepted",
    "urgency": "routine",
    "decision_due": "2026-05-23T16:00:00.000000+00:00",
    "decision_overdue": False,
    "transfer_form": {
        "diagnoses": [{"code": "I10", "text": "原发性高血压"}],
        "reason": "血压控制不佳",
        "past_history": "高血压10年",
        "treatment": "氨氯地平5mg qd",
        "referring_doctor": "李医生",
        "doctor_phone": "025-83262000",
    },
    "return_form": None,
    "steps": [{"kind": "requested", "at": "2026-05-20T09:30:00+08:00"}],
    "follow_up_due": "2026-06-03",
}


@router.get("/{referral_id}", responses={**QUERY_ERRORS, **example_response(REFERRAL_EXAMPLE)})
def referral(referral_id: UUID, who: Reader, as_of: AsOfDep, queries: QueriesDep) -> dict[str, Any]:
    """One referral with its steps, due dates, decision deadline and its two-way referral
    form: ``transfer_form`` (转出单) and, once returned, ``return_form`` (回转单)."""
    return visible(queries.referral(who.scope, referral_id, as_of=as_of))

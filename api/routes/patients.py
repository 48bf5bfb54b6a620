"""Patients: registry commands, follow-up visits; the registry entry, search and timeline."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import (
    Administrator,
    ApplicationDep,
    AsOfDep,
    CenterStaff,
    PageDep,
    QueriesDep,
    Reader,
    SettingsDep,
)
from api.openapi import COMMAND_ERRORS, QUERY_ERRORS, done, example_response, paged, visible
from api.schemas import (
    CENTER_ID,
    EXAMPLE_ID,
    PATIENT_ID,
    CleanText,
    CommandResult,
    Day,
    DeclineTransfer,
    ErasePatient,
    ItemsPage,
    Moment,
    MoveAway,
    RecordFollowUp,
    RegisterPatient,
    ReleaseTransfer,
    SearchPatients,
    TagPatient,
    WithdrawTransfer,
)
from jiayi import bootstrap

router = APIRouter(prefix="/patients", tags=["patients"])


@router.post("", status_code=201, response_model=CommandResult, responses=COMMAND_ERRORS)
def register_patient(body: RegisterPatient, who: CenterStaff, app: ApplicationDep) -> CommandResult:
    """Register a resident at your community center (with key-population tags)."""
    return done(
        app.register_patient(
            body.name,
            sex=body.sex,
            birth_date=body.birth_date,
            national_id=body.national_id,
            phone=body.phone,
            center_id=who.actor.org_id,
            actor=who.actor,
            tags=tuple(body.tags),
            id=body.id,
            at=body.at,
        )
    )


@router.post("/{patient_id}/tags", response_model=CommandResult, responses=COMMAND_ERRORS)
def tag_patient(
    patient_id: UUID, body: TagPatient, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """Add (or, with ``present: false``, remove) a key-population tag."""
    return done(
        app.tag_patient(patient_id, tag=body.tag, actor=who.actor, present=body.present, at=body.at)
    )


@router.post("/{patient_id}/erasure", response_model=CommandResult, responses=COMMAND_ERRORS)
def erase_patient(
    patient_id: UUID, body: ErasePatient, who: Administrator, app: ApplicationDep
) -> CommandResult:
    """Erase the patient (administrators; the legal ground is recorded): ``Patient.Erased``,
    then their data key is destroyed. Their personal data no longer opens anywhere (events,
    views, as-of replays); partners receive the erasure; the anonymous facts still count."""
    position = bootstrap.erase_patient(app, patient_id, reason=body.reason, actor=who.actor)
    return CommandResult(id=patient_id, position=position)


@router.post("/{patient_id}/move-away", response_model=CommandResult, responses=COMMAND_ERRORS)
def move_away(
    patient_id: UUID, body: MoveAway, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """The patient moved out of the area."""
    return done(
        app.move_patient_away(patient_id, destination=body.destination, actor=who.actor, at=body.at)
    )


@router.post(
    "/{patient_id}/transfer/release", response_model=CommandResult, responses=COMMAND_ERRORS
)
def release_transfer(
    patient_id: UUID, body: ReleaseTransfer, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """The patient's center lets them go: contract, registry and follow-ups move together."""
    return done(app.release_transfer(patient_id, actor=who.actor, at=body.at))


@router.post(
    "/{patient_id}/transfer/decline", response_model=CommandResult, responses=COMMAND_ERRORS
)
def decline_transfer(
    patient_id: UUID, body: DeclineTransfer, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """The patient's center declines the pending request, with a reason."""
    return done(app.decline_transfer(patient_id, reason=body.reason, actor=who.actor, at=body.at))


@router.post(
    "/{patient_id}/transfer/withdraw", response_model=CommandResult, responses=COMMAND_ERRORS
)
def withdraw_transfer(
    patient_id: UUID, body: WithdrawTransfer, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """Your center withdraws the transfer request it made."""
    return done(app.withdraw_transfer(patient_id, actor=who.actor, at=body.at))


@router.post(
    "/{patient_id}/follow-ups",
    status_code=201,
    response_model=CommandResult,
    responses=COMMAND_ERRORS,
)
def record_follow_up(
    patient_id: UUID, body: RecordFollowUp, who: CenterStaff, app: ApplicationDep
) -> CommandResult:
    """Record a follow-up visit; it fulfils the obligation named or the earliest it can meet."""
    return done(
        app.record_follow_up(
            patient_id,
            on=body.on,
            kind=body.kind,
            actor=who.actor,
            measurements=dict(body.measurements),
            risk_level=body.risk_level,
            note=body.note,
            obligation_id=body.obligation_id,
            id=body.id,
            at=body.at,
        )
    )


PATIENT_EXAMPLE = {
    "id": PATIENT_ID,
    "name": "王秀英",
    "sex": "F",
    "birth_date": "1950-03-04",
    "center_id": CENTER_ID,
    "district": "鼓楼区",
    "tags": ["hypertension"],
    "derived_tags": ["aged_65_plus"],
    "key_populations": ["aged_65_plus", "hypertension"],
    "contract": None,
}


@router.post(
    "/search",
    response_model=ItemsPage,
    responses={
        **QUERY_ERRORS,
        **example_response(
            {
                "items": [
                    {
                        **{
                            k: v
                            for k, v in PATIENT_EXAMPLE.items()
                            if k not in ("tags", "derived_tags", "key_populations", "contract")
                        },
                        "contract_id": None,
                    }
                ],
                "limit": 50,
                "offset": 0,
                "next_offset": None,
            }
        ),
    },
)
def search_patients(
    body: SearchPatients, who: Reader, queries: QueriesDep, page: PageDep
) -> ItemsPage:
    """Patients you may see, by name (substring) or id / national id (exact). The term goes
    in the body (it is personal data: never in a URL); each patient found is recorded in the
    read access log."""
    return paged(queries.search_patients(who.scope, body.q, page), page.limit, page.offset)


@router.get("/{patient_id}", responses={**QUERY_ERRORS, **example_response(PATIENT_EXAMPLE)})
def patient(patient_id: UUID, who: Reader, as_of: AsOfDep, queries: QueriesDep) -> dict[str, Any]:
    """One registry entry with the current contract, and its key populations: ``tags`` as
    recorded, ``derived_tags`` from the birth date on today's date (aged 65+, children 0-6;
    on the as-of day with ``as_of``), ``key_populations`` both together."""
    return visible(queries.patient(who.scope, patient_id, as_of=as_of))


@router.get("/{patient_id}/timeline", response_model=ItemsPage, responses=QUERY_ERRORS)
def timeline(
    patient_id: UUID,
    who: Reader,
    as_of: AsOfDep,
    queries: QueriesDep,
    page: PageDep,
    since: Annotated[Moment | None, Query(description="entries at or after")] = None,
    until: Annotated[Moment | None, Query(description="entries before")] = None,
    kinds: Annotated[
        list[Annotated[CleanText, Query(max_length=64)]] | None,
        Query(max_length=50, description="only these kinds (repeat the parameter)"),
    ] = None,
) -> ItemsPage:
    """The patient's journey, ordered by when things happened."""
    entries = queries.timeline(
        who.scope,
        patient_id,
        since=since,
        until=until,
        kinds=kinds,
        page=page,
        as_of=as_of,
    )
    return paged(visible(entries), page.limit, page.offset)


@router.get(
    "/{patient_id}/obligations",
    responses={
        **QUERY_ERRORS,
        **example_response(
            [
                {
                    "id": EXAMPLE_ID,
                    "reason": "return_to_community",
                    "source": "referral",
                    "source_id": EXAMPLE_ID,
                    "window_start": "2026-05-20",
                    "due": "2026-06-03",
                    "face_to_face": False,
                    "risk_assessment": False,
                    "overdue": False,
                    "patient_id": PATIENT_ID,
                }
            ]
        ),
    },
)
def open_obligations(
    patient_id: UUID,
    who: Reader,
    as_of: AsOfDep,
    queries: QueriesDep,
    settings: SettingsDep,
    today: Annotated[
        Day | None, Query(description="the day `overdue` is counted on; default: today")
    ] = None,
) -> list[dict[str, Any]]:
    """The patient's open follow-up obligations, earliest due first: what a visit's
    `obligation_id` may name. `source` is `referral` (the loop of the referral `source_id`:
    after the referral, after its return) or `contract`; `overdue`: still open and due before
    `today` (the one definition the workload, worklists and KPIs use). Visible as the
    patient's timeline is."""
    day = today or (as_of.astimezone(settings.zone()).date() if as_of else settings.today())
    return visible(queries.open_obligations(who.scope, patient_id, day, as_of=as_of))

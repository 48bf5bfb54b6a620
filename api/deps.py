"""Dependencies as ``Annotated`` aliases: settings, application, caller, read side, paging.

The ones that never block are ``async`` (no hop to a worker thread); the ones that may touch
the database (the token lookup, the application, waiting for the views) are not.

Authorization is one mechanism: each route declares the roles it admits with
``requires(...)``; which organisation may act on what is decided by the domain (commands) and
by the caller's ``Scope`` (queries).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiProblem
from api.schemas import Moment
from api.services import Services
from api.tokens import Principal, Role
from domain.application import CareCoordination
from domain.patients import NotThisPatient
from jiayi.settings import Settings
from projections.queries import Page, Queries, Scope

bearer = HTTPBearer(auto_error=False, description="a token from `jiayi tokens issue`")


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def get_settings(svc: ServicesDep) -> Settings:
    return svc.settings


def get_application(svc: ServicesDep) -> CareCoordination:
    return svc.application()


def lookup_principal(svc: Services, token: str) -> Principal | None:
    """The caller ``token`` identifies (unknown or revoked: None). The API's bearer header and
    the web pages' sign-in cookie both resolve tokens here."""
    return svc.tokens.principal(token) if token else None


def get_principal(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise ApiProblem(
            401,
            "unauthenticated",
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = lookup_principal(svc, credentials.credentials)
    if principal is None:
        raise ApiProblem(
            401,
            "invalid-token",
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
ApplicationDep = Annotated[CareCoordination, Depends(get_application)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def requires(*roles: Role) -> Any:
    """A dependency admitting only callers with one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise ApiProblem(
                403,
                "role-not-allowed",
                f"a {principal.role} may not use this endpoint",
                allowed_roles=sorted(str(r) for r in allowed),
            )
        return principal

    return Depends(check)


# --- roles per kind of endpoint -------------------------------------------------------------

CENTER = (Role.CENTER_STAFF,)
HOSPITAL = (Role.HOSPITAL_STAFF,)
#: Steps a team takes: its center, or a specialist member from a hospital.
TEAM = (Role.CENTER_STAFF, Role.HOSPITAL_STAFF)
ADMIN = (Role.ADMINISTRATOR,)
READERS = (Role.CENTER_STAFF, Role.HOSPITAL_STAFF, Role.COORDINATOR, Role.AUDITOR)

CenterStaff = Annotated[Principal, requires(*CENTER)]
HospitalStaff = Annotated[Principal, requires(*HOSPITAL)]
TeamStaff = Annotated[Principal, requires(*TEAM)]
Administrator = Annotated[Principal, requires(*ADMIN)]
Reader = Annotated[Principal, requires(*READERS)]
Auditor = Annotated[Principal, requires(Role.AUDITOR)]
CenterReader = Annotated[Principal, requires(Role.CENTER_STAFF, Role.COORDINATOR, Role.AUDITOR)]
HospitalReader = Annotated[Principal, requires(Role.HOSPITAL_STAFF, Role.COORDINATOR, Role.AUDITOR)]


# --- the read side ----------------------------------------------------------------------------


def get_queries(
    svc: ServicesDep,
    wait_for_position: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**62,
            description="wait (up to 5 s) until the views reach this log position (from a "
            "command's answer) before reading",
            examples=[1234],
        ),
    ] = None,
) -> Queries:
    queries = svc.queries
    if queries is None:
        raise ApiProblem(
            503,
            "read-side-unavailable",
            "the read models are not available in this process",
            headers={"Retry-After": "5"},
        )
    if wait_for_position is None or queries.position() >= wait_for_position:
        return queries
    if wait_for_position > queries.log_position():
        raise ApiProblem(
            422,
            "position-not-recorded",
            f"nothing has been recorded at position {wait_for_position}: pass a position "
            "from a command's answer",
            field="query.wait_for_position",
        )
    if not queries.wait_for(wait_for_position, timeout=5.0):
        raise ApiProblem(
            503,
            "views-behind",
            f"the views have not reached position {wait_for_position} yet",
            headers={"Retry-After": "1"},
        )
    return queries


QueriesDep = Annotated[Queries, Depends(get_queries)]


async def get_scope(principal: Reader) -> Scope:
    return principal.scope


ScopeDep = Annotated[Scope, Depends(get_scope)]


async def get_page(
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="rows to skip")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(get_page)]


async def get_as_of(
    principal: PrincipalDep,
    as_of: Annotated[
        Moment | None,
        Query(
            description="read the views as they stood at this moment (auditors only)",
            examples=["2026-03-01T00:00:00+08:00"],
        ),
    ] = None,
) -> datetime | None:
    if as_of is None:
        return None
    if principal.role != Role.AUDITOR:
        raise ApiProblem(403, "role-not-allowed", "only auditors read the views as of a moment")
    # The views as of a moment are replayed once and kept: a moment still to come would be
    # kept before it happened (and every new one would cost a replay).
    if as_of > datetime.now(UTC):
        raise ApiProblem(
            422,
            "as-of-in-the-future",
            f"{as_of.isoformat()} has not happened yet: read the views as of a past moment",
            field="query.as_of",
        )
    return as_of


AsOfDep = Annotated[datetime | None, Depends(get_as_of)]

#: Seconds a command naming an unknown national id waits for the registry view to catch up.
REGISTRY_WAIT = 2.0


def identify(queries: Queries, national_id: str) -> UUID:
    """The patient a real encounter names (returns, transfer requests): found by national id;
    the command then checks the name too, in the domain. Unknown answers as absent (404). A
    patient registered a moment ago may not be in the registry view yet: wait for it once."""
    found = queries.patient_id_by_national_id(national_id)
    if found is None and queries.wait_for(queries.log_position(), timeout=REGISTRY_WAIT):
        found = queries.patient_id_by_national_id(national_id)
    if found is None:
        raise NotThisPatient("no patient with that national id and name")
    return found

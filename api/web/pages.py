"""The web pages under ``/ui``: sign-in, patient search, journey, team workload, worklists.

Pages read through the same :class:`Queries` and :class:`Scope` as the JSON API and act through
the same use cases with the signed-in person's ``Actor``; roles per page are the API's
(``api.deps``). A domain error or an unreachable database gets the status and code the API
gives it (``api.errors.domain_problem``): anything not visible reads as a 404 page, an invalid value
422, a broken rule 409 with its message, the database unavailable 503, a damaged stored
event 500 (``damaged-event``, no data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api import deps
from api.errors import DAMAGED_PROBLEM, UNAVAILABLE, Problem, ProblemPages, domain_problem
from api.schemas import EARLIEST, LATEST
from api.services import Services
from api.tokens import Principal, Role
from api.web import i18n, session
from api.web import journey as layout
from api.web.workload import workload_charts
from audit import access
from domain.application import Outcome
from domain.common import DomainError, InvalidValue
from domain.patients import age_on
from domain.referrals import RejectionReason
from domain.text import unwanted_reason
from projections.queries import Page, Queries

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["local"] = layout.local

router = APIRouter(prefix="/ui", include_in_schema=False)

LIST = Page(limit=200)
EVERYTHING = Page(limit=1000)


class PageError(Exception):
    """Shown as an error page with ``status`` and the label ``key``."""

    def __init__(self, status: int, key: str, detail: str = "") -> None:
        super().__init__(key)
        self.status, self.key, self.detail = status, key, detail


class SignInRequired(Exception):
    pass


@dataclass
class Ctx:
    """What every page knows: the request, its language, who is signed in."""

    request: Request
    lang: str
    t: i18n.Labels
    who: Principal | None

    @property
    def services(self) -> Services:
        found: Services = self.request.app.state.services
        return found

    @property
    def queries(self) -> Queries:
        if self.services.queries is None:
            raise PageError(503, "unavailable")
        return self.services.queries

    @property
    def principal(self) -> Principal:
        if self.who is None:
            raise SignInRequired()
        return self.who

    def render(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("message", None)
        values.setdefault("error", None)
        response = templates.TemplateResponse(
            self.request,
            name,
            {
                "t": self.t,
                "lang": self.lang,
                "who": self.who,
                "csrf": session.csrf_token(self.request),
                "switch": {code: self.url_with(lang=code) for code in i18n.LANGUAGES},
                **values,
            },
            status_code=status,
        )
        self.keep(response)
        return response

    def url_with(self, **params: str) -> str:
        """This page's path and query with ``params`` changed (relative: proxies keep working)."""
        url = self.request.url.include_query_params(**params)
        return f"{url.path}?{url.query}"

    def keep(self, response: Response) -> None:
        """Remember an explicit language choice and a freshly minted form token."""
        chosen = self.request.query_params.get("lang")
        if chosen in i18n.LANGUAGES:
            response.set_cookie(i18n.COOKIE, chosen, path=session.PATH, samesite="strict")
        session.remember_csrf(self.request, response)


def context(request: Request) -> Ctx:
    """The page's context, with whoever the sign-in cookie names."""
    return context_of(request, session.principal(request))


def refuse_unwanted(values: Iterable[tuple[str, str]], where: str) -> None:
    """Every text a page takes in (query, path, form) holds no control character
    (``domain.text``): else a 422 page naming the field and the character."""
    for name, value in values:
        reason = unwanted_reason(name)
        if reason is not None:
            raise InvalidValue(f"a {where} field's name: {reason}", field=where)
        reason = unwanted_reason(value)
        if reason is not None:
            raise InvalidValue(f"{where}.{name}: {reason}", field=f"{where}.{name}")


def entered(request: Request) -> Ctx:
    """Every page's dependency: its query and path parameters checked, then its context (no
    other parameters, or they would be read from the query string)."""
    refuse_unwanted(request.query_params.multi_items(), "query")
    refuse_unwanted(((k, str(v)) for k, v in request.path_params.items()), "path")
    return context(request)


def context_of(request: Request, who: Principal | None) -> Ctx:
    services: Services = request.app.state.services
    lang = i18n.pick(
        request.query_params.get("lang"),
        request.cookies.get(i18n.COOKIE),
        request.headers.get("accept-language"),
        services.settings.ui_language,
    )
    return Ctx(request, lang, i18n.Labels(lang), who)


def allowed(*roles: Role) -> Callable[..., Ctx]:
    """A page for signed-in people with one of ``roles`` (the API's roles for the same data)."""

    def check(ctx: Ctx = Depends(entered)) -> Ctx:
        if ctx.principal.role not in roles:
            raise PageError(403, "forbidden")
        return ctx

    return check


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the pages post nothing else), its fields checked."""
    body = (await request.body()).decode("utf-8", "replace")
    fields = parse_qsl(body, keep_blank_values=True)
    refuse_unwanted(fields, "form")
    return dict(fields)


Anyone = Depends(entered)
Readers = Depends(allowed(*deps.READERS))
CenterReaders = Depends(allowed(Role.CENTER_STAFF, Role.COORDINATOR, Role.AUDITOR))
HospitalReaders = Depends(allowed(Role.HOSPITAL_STAFF, Role.COORDINATOR, Role.AUDITOR))
Hospital = Depends(allowed(*deps.HOSPITAL))
Center = Depends(allowed(*deps.CENTER))
Form = Depends(form)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def home(who: Principal) -> str:
    return {
        Role.HOSPITAL_STAFF: "/ui/worklists/hospital",
        Role.COORDINATOR: "/ui/teams",
    }.get(who.role, "/ui/patients")


def parse_as_of(ctx: Ctx, text: str | None) -> datetime | None:
    """An auditor's moment: ISO 8601 or a browser's ``datetime-local`` (read as local time)."""
    if not text:
        return None
    if ctx.principal.role != Role.AUDITOR:
        raise PageError(403, "as_of_auditors")
    try:
        found = datetime.fromisoformat(text)
        found = found if found.tzinfo else found.astimezone()
    except (ValueError, OverflowError) as exc:
        raise PageError(422, "error", f"as_of: {text}") from exc
    if not EARLIEST <= found <= LATEST:
        raise PageError(422, "error", f"as_of: {text}")
    if found > datetime.now(UTC):  # as in api.deps.get_as_of: replays are kept per moment
        raise PageError(422, "error", f"as_of: {text} (as-of-in-the-future)")
    return found


def uuid_or_404(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as exc:
        raise PageError(404, "not_found") from exc


def uuid_or_invalid(text: str, field: str) -> UUID:
    """A form's id field, or the domain's own answer to a value it cannot take (422)."""
    try:
        return UUID(text)
    except ValueError:
        raise InvalidValue(f"{field} is not an id", field=field) from None


def check_csrf(ctx: Ctx, fields: dict[str, str]) -> None:
    if not session.csrf_ok(ctx.request, fields.get("csrf", "")):
        raise PageError(403, "csrf_failed")


# --- sign-in ----------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def index(ctx: Ctx = Anyone) -> Response:
    return redirect(home(ctx.principal))


@router.get("/sign-in")
def sign_in_page(ctx: Ctx = Anyone, next: str = "") -> HTMLResponse:
    return ctx.render("sign_in.html", next=next)


@router.post("/sign-in")
def sign_in(ctx: Ctx = Anyone, fields: dict[str, str] = Form) -> Response:
    check_csrf(ctx, fields)
    token = fields.get("token", "").strip()
    who = deps.lookup_principal(ctx.services, token)
    if who is None:
        return ctx.render("sign_in.html", status=401, error=ctx.t("invalid_token"), next="")
    target = fields.get("next", "")
    if not target.startswith("/ui/") or target.startswith("//"):
        target = home(who)
    response = redirect(target)
    session.sign_in(ctx.request, response, token)
    return response


@router.post("/sign-out")
def sign_out(ctx: Ctx = Anyone, fields: dict[str, str] = Form) -> Response:
    check_csrf(ctx, fields)
    response = redirect("/ui/sign-in")
    session.sign_out(ctx.request, response)
    return response


# --- patients ---------------------------------------------------------------------------------


@router.get("/patients")
def patients(ctx: Ctx = Readers) -> HTMLResponse:
    return ctx.render("patients.html", q="", patients=[], searched=False)


@router.post("/patients")
def search_patients(ctx: Ctx = Readers, fields: dict[str, str] = Form) -> HTMLResponse:
    """The search form posts its term (personal data: never in a URL); the results answer the
    post itself, no redirect carries the term anywhere."""
    check_csrf(ctx, fields)
    q = fields.get("q", "")[:100]
    found = ctx.queries.search_patients(ctx.principal.scope, q, LIST) if q.strip() else []
    return ctx.render("patients.html", q=q, patients=found, searched=bool(q.strip()))


@router.get("/patients/{patient_id}")
def patient_journey(patient_id: str, ctx: Ctx = Readers, as_of: str = "") -> HTMLResponse:
    who = ctx.principal
    pid = uuid_or_404(patient_id)
    moment = parse_as_of(ctx, as_of)
    queries, scope = ctx.queries, who.scope
    patient = queries.patient(scope, pid, as_of=moment)
    if patient is None:
        raise PageError(404, "not_found")
    entries = queries.timeline(scope, pid, page=EVERYTHING, as_of=moment) or []
    referrals: dict[str, dict[str, Any]] = {}
    for rid in dict.fromkeys(e["referral_id"] for e in entries if e.get("referral_id")):
        found = queries.referral(scope, UUID(rid), as_of=moment)
        if found is not None:
            referrals[rid] = found
    now = moment or datetime.now(UTC)
    today = now.astimezone(ctx.services.settings.zone()).date()
    # the open follow-ups, flagged overdue by the one definition the worklists and KPIs use
    obligations = queries.open_obligations(scope, pid, today, as_of=moment) or []
    journey = layout.build(patient, entries, referrals, obligations, now, ctx.t)
    return ctx.render(
        "journey.html",
        patient=patient,
        journey=journey,
        as_of=moment,
        as_of_text=as_of,
        layout=layout,
    )


# --- the read access log (auditors) -----------------------------------------------------------

Auditors = Depends(allowed(Role.AUDITOR))
ACCESS_PAGE = 100


@router.get("/audit/access")
def access_log(ctx: Ctx = Auditors, patient: str = "", offset: str = "0") -> HTMLResponse:
    """Who read this patient: the access log about one patient, newest first."""
    if not patient.strip():
        return ctx.render("access.html", patient=None, patient_text="", entries=[])
    pid = uuid_or_404(patient.strip())
    start = max(0, min(int(offset), 1_000_000)) if offset.isdigit() else 0
    scope = ctx.principal.scope
    found = ctx.queries.access_entries(scope, pid, Page(limit=ACCESS_PAGE, offset=start))
    if found is None:
        raise PageError(404, "not_found")
    registry = ctx.queries.patient(scope, pid)
    return ctx.render(
        "access.html",
        patient=registry,
        patient_text=str(pid),
        entries=found,
        previous=max(0, start - ACCESS_PAGE) if start else None,
        next=start + ACCESS_PAGE if len(found) >= ACCESS_PAGE else None,
    )


@router.get("/audit/access/report.csv")
def access_report_csv(ctx: Ctx = Auditors, patient: str = "") -> Response:
    """The patient's access report as CSV (one line per read), for the signed-in auditor."""
    pid = uuid_or_404(patient.strip())
    found = ctx.queries.access_report(ctx.principal.scope, pid)
    if found is None:
        raise PageError(404, "not_found")
    return Response(
        access.report_csv(found),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="access-{pid}.csv"'},
    )


# --- teams ------------------------------------------------------------------------------------


@router.get("/teams")
def teams(ctx: Ctx = CenterReaders) -> HTMLResponse:
    return ctx.render("teams.html", teams=ctx.queries.teams(ctx.principal.scope, LIST))


@router.get("/teams/{team_id}")
def team(team_id: str, ctx: Ctx = CenterReaders, as_of: str = "") -> HTMLResponse:
    moment = parse_as_of(ctx, as_of)
    today = (moment or datetime.now(UTC)).astimezone(ctx.services.settings.zone()).date()
    found = ctx.queries.team_workload(
        ctx.principal.scope, uuid_or_404(team_id), today, as_of=moment
    )
    if found is None:
        raise PageError(404, "not_found")
    return ctx.render(
        "team.html",
        team=found,
        charts=workload_charts(found, ctx.t),
        as_of=moment,
        as_of_text=as_of,
    )


# --- worklists --------------------------------------------------------------------------------


def _org(ctx: Ctx, org: str) -> UUID | None:
    """Staff see their own organisation's worklist; coordinators and auditors name one."""
    who = ctx.principal
    if who.role in (Role.HOSPITAL_STAFF, Role.CENTER_STAFF):
        return who.org_id
    return uuid_or_404(org) if org.strip() else None


def _hospital_page(
    ctx: Ctx, org: UUID | None, status: int = 200, message: str = "", error: str = ""
) -> HTMLResponse:
    found = ctx.queries.hospital_worklist(ctx.principal.scope, org, LIST) if org else []
    if found is None:  # not this reader's hospital
        raise PageError(404, "not_found")
    rows = found
    now = datetime.now(UTC)
    zone = ctx.services.settings.zone()
    for r in rows:
        requested = layout.moment(r.get("requested_at"))
        r["waiting"] = layout.duration(now - requested, ctx.t) if requested else ""
        # one definition of a late decision: the deadline by urgency (domain.referrals)
        r["decision_by"] = _deadline_day(r.get("decision_due"), zone)
    return ctx.render(
        "hospital_worklist.html",
        status=status,
        org=org,
        rows=rows,
        reasons=[str(r) for r in RejectionReason],
        message=message,
        error=error,
    )


@router.get("/referrals/{referral_id}/form")
def referral_form(referral_id: str, ctx: Ctx = Readers) -> HTMLResponse:
    """The two-way referral form (双向转诊单) laid out to print on A4: the stub (存根), the
    transfer form (转出单) and, once the patient is returned, the return form (回转单). Seen by
    whoever may read the referral (absent and forbidden alike: the 404 page); the patient's
    registry entry only when the reader may see it too."""
    rid = uuid_or_404(referral_id)
    scope = ctx.principal.scope
    referral = ctx.queries.referral(scope, rid)
    if referral is None or referral.get("direction") != "up":
        raise PageError(404, "not_found")
    patient = ctx.queries.patient(scope, UUID(referral["patient_id"])) or {}
    referral["decision_by"] = _deadline_day(
        referral.get("decision_due"), ctx.services.settings.zone()
    )
    age = _age(patient, ctx.services.settings.today())
    return ctx.render("referral_form.html", r=referral, patient=patient, age=age)


def _deadline_day(text: str | None, zone: tzinfo) -> str:
    """A decision deadline (the end of a day of the deployment's zone) shown as that day."""
    due = layout.moment(text)
    return (due - timedelta(microseconds=1)).astimezone(zone).date().isoformat() if due else ""


def _age(patient: dict[str, Any], today: date) -> str:
    """Completed years on the deployment's day (the domain's count); "" when not known."""
    try:
        years = age_on(date.fromisoformat(str(patient.get("birth_date"))[:10]), today)
    except ValueError:  # not shown to this reader, or erased
        return ""
    return str(years) if years >= 0 else ""


@router.get("/worklists/hospital")
def hospital_worklist(ctx: Ctx = HospitalReaders, org: str = "", done: str = "") -> HTMLResponse:
    message = ctx.t(f"{done}_msg") if done in ("accepted", "rejected") else ""
    return _hospital_page(ctx, _org(ctx, org), message=message)


def _center_page(
    ctx: Ctx, org: UUID | None, status: int = 200, message: str = "", error: str = ""
) -> HTMLResponse:
    today = ctx.services.settings.today()
    work: dict[str, list[dict[str, Any]]] = {
        "returns_awaiting_acknowledgement": [],
        "overdue_follow_ups": [],
    }
    if org is not None:
        found = ctx.queries.center_worklist(ctx.principal.scope, org, today, LIST)
        if found is None:  # not this reader's center
            raise PageError(404, "not_found")
        work = found
    for o in work["overdue_follow_ups"]:
        o["days_late"] = (today - date.fromisoformat(o["due"])).days
    return ctx.render(
        "center_worklist.html",
        status=status,
        org=org,
        returns=work["returns_awaiting_acknowledgement"],
        overdue=work["overdue_follow_ups"],
        to_release=work.get("transfers_to_release", []),
        requested=work.get("transfers_requested", []),
        teams=ctx.queries.teams(ctx.principal.scope, LIST) if org is not None else [],
        message=message,
        error=error,
    )


#: What the center's worklist says after each of its actions.
CENTER_DONE = {
    "acknowledged": "acknowledged_msg",
    "transfer_requested": "transfer_requested_msg",
    "released": "released_msg",
    "declined": "declined_msg",
    "withdrawn": "withdrawn_msg",
}


@router.get("/worklists/center")
def center_worklist(ctx: Ctx = CenterReaders, org: str = "", done: str = "") -> HTMLResponse:
    message = ctx.t(CENTER_DONE[done]) if done in CENTER_DONE else ""
    return _center_page(ctx, _org(ctx, org), message=message)


# --- actions ----------------------------------------------------------------------------------


def _act(
    ctx: Ctx,
    fields: dict[str, str],
    step: Callable[[], Outcome],
    done: str,
    page: Callable[..., HTMLResponse],
    back: str,
) -> Response:
    """Run a use case; on success wait for the views and redirect, else show the worklist
    again with what went wrong, under the status the API gives the same error."""
    check_csrf(ctx, fields)
    try:
        outcome = step()
    except DomainError as exc:
        found = domain_problem(exc)
        text = _problem_text(ctx, found)
        return page(ctx, ctx.principal.org_id, status=found.status, error=f"{text} ({found.code})")
    ctx.queries.wait_for(outcome.position, timeout=5.0)
    return redirect(f"{back}?done={quote(done)}")


@router.post("/referrals/{referral_id}/accept")
def accept(referral_id: str, ctx: Ctx = Hospital, fields: dict[str, str] = Form) -> Response:
    rid, app, actor = uuid_or_404(referral_id), ctx.services.application(), ctx.principal.actor
    note = fields.get("note", "")[:4000]
    return _act(
        ctx,
        fields,
        lambda: app.accept_referral(rid, actor=actor, note=note),
        "accepted",
        _hospital_page,
        "/ui/worklists/hospital",
    )


@router.post("/referrals/{referral_id}/reject")
def reject(referral_id: str, ctx: Ctx = Hospital, fields: dict[str, str] = Form) -> Response:
    rid, app, actor = uuid_or_404(referral_id), ctx.services.application(), ctx.principal.actor
    reason, note = fields.get("reason_code", ""), fields.get("note", "")[:4000]
    return _act(
        ctx,
        fields,
        lambda: app.reject_referral(rid, reason_code=reason, actor=actor, note=note),
        "rejected",
        _hospital_page,
        "/ui/worklists/hospital",
    )


@router.post("/referrals/{referral_id}/acknowledge")
def acknowledge(referral_id: str, ctx: Ctx = Center, fields: dict[str, str] = Form) -> Response:
    rid, app, actor = uuid_or_404(referral_id), ctx.services.application(), ctx.principal.actor
    return _act(
        ctx,
        fields,
        lambda: app.acknowledge_return(rid, actor=actor),
        "acknowledged",
        _center_page,
        "/ui/worklists/center",
    )


def _center_act(
    ctx: Ctx, fields: dict[str, str], step: Callable[[], Outcome], done: str
) -> Response:
    return _act(ctx, fields, step, done, _center_page, "/ui/worklists/center")


@router.post("/transfers")
def request_transfer(ctx: Ctx = Center, fields: dict[str, str] = Form) -> Response:
    """The center asks for a resident of another center, naming them as they came to it."""
    app, actor = ctx.services.application(), ctx.principal.actor
    national_id, name = fields.get("national_id", "").strip()[:18], fields.get("name", "")[:100]
    team, consent = fields.get("team_id", ""), fields.get("consent", "")[:200]

    def step() -> Outcome:
        return app.request_transfer(
            deps.identify(ctx.queries, national_id),
            national_id=national_id,
            name=name,
            team_id=uuid_or_invalid(team, "team_id"),
            consent=consent,
            actor=actor,
        )

    return _center_act(ctx, fields, step, "transfer_requested")


@router.post("/patients/{patient_id}/transfer/release")
def release_transfer(patient_id: str, ctx: Ctx = Center, fields: dict[str, str] = Form) -> Response:
    pid, app, actor = uuid_or_404(patient_id), ctx.services.application(), ctx.principal.actor
    return _center_act(ctx, fields, lambda: app.release_transfer(pid, actor=actor), "released")


@router.post("/patients/{patient_id}/transfer/decline")
def decline_transfer(patient_id: str, ctx: Ctx = Center, fields: dict[str, str] = Form) -> Response:
    pid, app, actor = uuid_or_404(patient_id), ctx.services.application(), ctx.principal.actor
    reason = fields.get("reason", "")[:500]
    return _center_act(
        ctx, fields, lambda: app.decline_transfer(pid, reason=reason, actor=actor), "declined"
    )


@router.post("/patients/{patient_id}/transfer/withdraw")
def withdraw_transfer(
    patient_id: str, ctx: Ctx = Center, fields: dict[str, str] = Form
) -> Response:
    pid, app, actor = uuid_or_404(patient_id), ctx.services.application(), ctx.principal.actor
    return _center_act(ctx, fields, lambda: app.withdraw_transfer(pid, actor=actor), "withdrawn")


# --- errors -----------------------------------------------------------------------------------


def on_page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    ctx = context(request)
    return ctx.render(
        "error.html", status=exc.status, error=ctx.t(exc.key), detail=exc.detail, code=exc.status
    )


def _problem_text(ctx: Ctx, found: Problem) -> str:
    """What a person reads for a classified problem: the labels for "not visible", "try
    again shortly" and a damaged record, else the domain's own message."""
    if found.status == 404:
        return ctx.t("not_found")
    if found.status == 503:
        return ctx.t("unavailable")
    if found.code == DAMAGED_PROBLEM.code:
        return ctx.t("damaged")
    return found.detail


def render_problem(request: Request, found: Problem) -> Response:
    """A domain error or an unreachable database raised by a page (``api.errors`` hands them
    over for paths under ``/ui``), as an error page with the API's status and code."""
    try:
        ctx = context(request)
    except UNAVAILABLE:  # the signed-in person cannot be looked up either
        ctx = context_of(request, None)
    response = ctx.render(
        "error.html",
        status=found.status,
        error=ctx.t("error"),
        detail=f"{_problem_text(ctx, found)} ({found.code})",
        code=found.status,
    )
    response.headers.update(found.headers)
    return response


PROBLEM_PAGES = ProblemPages(router.prefix, render_problem)


def on_sign_in_required(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = ""
    response = redirect("/ui/sign-in" + (f"?next={quote(target)}" if target else ""))
    if request.cookies.get(session.SESSION):  # ended, or never a session: forget it
        response.delete_cookie(session.SESSION, path=session.PATH)
    return response

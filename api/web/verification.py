"""The auditors' page of the log's verification: the last one, and starting a bounded one."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from api.tokens import Role
from api.web.pages import Ctx, Form, PageError, allowed, check_csrf, redirect
from audit.service import MAX_EVENTS

router = APIRouter(prefix="/ui/audit", include_in_schema=False)

Auditor = Depends(allowed(Role.AUDITOR))


@router.get("/verification")
def verification(ctx: Ctx = Auditor, done: str = "") -> HTMLResponse:
    services = ctx.services
    services.application()  # the event store's tables exist
    found = services.verifications
    message = {"started": ctx.t("verification_started"), "busy": ctx.t("verification_busy")}
    return ctx.render(
        "verification.html",
        last=found.last(),
        running=found.running,
        max_events=MAX_EVENTS,
        message=message.get(done),
    )


def _bounded(text: str, default: int, low: int, high: int, field: str) -> int:
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise PageError(422, "error", f"{field}: a whole number") from None
    if not low <= value <= high:
        raise PageError(422, "error", f"{field}: from {low} to {high}")
    return value


@router.post("/verification")
def start_verification(ctx: Ctx = Auditor, fields: dict[str, str] = Form) -> Response:
    check_csrf(ctx, fields)
    after = _bounded(fields.get("after", ""), 0, 0, 2**62, "after")
    limit = _bounded(fields.get("limit", ""), MAX_EVENTS, 1, MAX_EVENTS, "limit")
    ctx.services.application()
    started = ctx.services.verifications.start(ctx.principal.staff_id, after, limit)
    return redirect(f"/ui/audit/verification?done={'started' if started else 'busy'}")

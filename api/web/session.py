"""Who is signed in to the pages, and the form token that guards every POST.

The session cookie holds the bearer token itself (HttpOnly, SameSite=Strict, path ``/ui``); it
is resolved on every request with the API's own lookup (:func:`api.deps.lookup_principal`), so
a revoked token signs the pages out within the lookup's cache time. POST forms carry a CSRF
token that must equal the ``jiayi_csrf`` cookie (double submit; the cookie is SameSite=Strict).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request, Response

from api.deps import lookup_principal
from api.services import Services
from api.tokens import Principal

SESSION = "jiayi_session"
CSRF = "jiayi_csrf"
PATH = "/ui"


def principal(request: Request) -> Principal | None:
    services: Services = request.app.state.services
    return lookup_principal(services, request.cookies.get(SESSION, ""))


def csrf_token(request: Request) -> str:
    """The form token for this browser (an existing cookie's, else a new one to set)."""
    found = request.cookies.get(CSRF, "")
    if len(found) >= 32:
        return found
    fresh: str = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
    request.state.new_csrf = fresh
    return fresh


def csrf_ok(request: Request, submitted: str) -> bool:
    expected = request.cookies.get(CSRF, "")
    return len(expected) >= 32 and hmac.compare_digest(expected, submitted or "")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def remember_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie if this request minted one."""
    fresh = getattr(request.state, "new_csrf", "")
    if fresh:
        response.set_cookie(
            CSRF, fresh, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
        )


def sign_in(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION, token, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
    )
    # A new form token for the new session.
    response.set_cookie(
        CSRF,
        secrets.token_urlsafe(32),
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(SESSION, path=PATH)
    response.delete_cookie(CSRF, path=PATH)

"""Who is signed in to the pages, and the form token that guards every POST.

Signing in with an API token makes a server-side session (:mod:`api.sessions`); the cookie
(``jiayi_session``: HttpOnly, SameSite=Strict, Secure over https, path ``/ui``) holds only the
session's random id, never the token, and the server keeps only its hash. A session ends after
``JIAYI_UI_SESSION_IDLE`` seconds unused, ``JIAYI_UI_SESSION_LIFETIME`` seconds after sign-in,
at sign-out, or when its token is revoked; the page then asks to sign in again. The principal
is the token's, looked up as the API looks it up (a revoked token signs the pages out).

The form token (CSRF) is bound to the session: an HMAC keyed with the session's id, which
only the server and the browser holding the cookie know, so a form token from another session
(or copied from a page) does not pass. Before signing in, the sign-in form's token is bound
the same way to a random value in a ``jiayi_csrf`` cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from fastapi import Request, Response

from api.services import Services
from api.tokens import Principal, token_hash

SESSION = "jiayi_session"
CSRF = "jiayi_csrf"
PATH = "/ui"
#: What the form token's HMAC signs (its version: a change makes old forms fail, not pass).
PURPOSE = b"jiayi form token v1"


def principal(request: Request) -> Principal | None:
    """Whoever the session cookie's live session stands for (None: not signed in, an ended
    session or a revoked token). Remembers the session for the form token."""
    services: Services = request.app.state.services
    session_id = request.cookies.get(SESSION, "")
    digest = services.sessions.token_hash(session_id) if session_id else None
    who = services.tokens.principal_by_hash(digest) if digest else None
    if who is not None:
        request.state.session_id = session_id
    return who


def _binding(request: Request, mint: bool) -> str:
    """What the form token is bound to: the live session's id, else the pre-sign-in cookie's
    random value (minted when ``mint`` and there is none)."""
    session_id: str = getattr(request.state, "session_id", "")
    if session_id:
        return session_id
    found = request.cookies.get(CSRF, "")
    if len(found) >= 32:
        return found
    if not mint:
        return ""
    fresh: str = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
    request.state.new_csrf = fresh
    return fresh


def _token(binding: str) -> str:
    mac = hmac.new(binding.encode(), PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_token(request: Request) -> str:
    """The form token for this session (or this browser, before signing in)."""
    return _token(_binding(request, mint=True))


def csrf_ok(request: Request, submitted: str) -> bool:
    binding = _binding(request, mint=False)
    return bool(binding) and hmac.compare_digest(
        _token(binding).encode(), (submitted or "").encode()
    )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def remember_csrf(request: Request, response: Response) -> None:
    """Set the pre-sign-in cookie if this request minted one."""
    fresh = getattr(request.state, "new_csrf", "")
    if fresh:
        response.set_cookie(
            CSRF, fresh, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
        )


def sign_in(request: Request, response: Response, token: str) -> None:
    """A new session for ``token`` (any previous one of this browser ended)."""
    services: Services = request.app.state.services
    previous = request.cookies.get(SESSION, "")
    if previous:
        services.sessions.end(previous)
    session_id = services.sessions.create(token_hash(token))
    response.set_cookie(
        SESSION,
        session_id,
        max_age=services.settings.ui_session_lifetime,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(CSRF, path=PATH)


def sign_out(request: Request, response: Response) -> None:
    services: Services = request.app.state.services
    session_id = request.cookies.get(SESSION, "")
    if session_id:
        services.sessions.end(session_id)
    response.delete_cookie(SESSION, path=PATH)
    response.delete_cookie(CSRF, path=PATH)

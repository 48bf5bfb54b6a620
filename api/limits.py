"""The HTTP boundary before anything else runs: a limit on request bodies, and the headers
every answer carries (pure ASGI middleware, outermost, so nothing inside ever sees what they
refuse).

:class:`BodyLimit` answers 413 ``body-too-large`` to a body larger than the limit before it is
read and before authentication: at once when ``Content-Length`` says so, else (a chunked or
streamed body) as soon as the bytes received pass the limit, without reading the rest. Bytes
are counted as they arrive and never buffered here; the idempotency middleware and the routes,
which do read bodies, only ever see one within the limit. The connection is closed after the
answer (the client may still be sending).

:class:`SecurityHeaders` adds the browser's protections to every page (``/ui``): a
Content-Security-Policy allowing only the pages' own script and styles, no framing, no
referrer, no sniffing; and ``Cache-Control: no-store`` to every answer except the pages'
static assets (answers name patients: no cache, shared or the browser's, keeps them).
"""

from __future__ import annotations

import contextlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import Problem, answer

#: The pages' policy: their own script file and style sheet only (no inline script, no
#: ``eval``); inline ``style`` attributes for the workload bars' widths; nothing framed, no
#: plugins, forms posting only back to the server.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGES = "/ui"
STATIC = "/ui/static/"


class BodyTooLarge(Exception):
    """A request body passed the limit while it was being read."""


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        "body-too-large",
        f"the request body is larger than {limit} bytes, the most this server reads",
        headers={"Connection": "close"},
    )


class BodyLimit:
    """Refuses request bodies larger than ``limit`` bytes with 413 (see the module)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app makes of the cut body, the answer is the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # the app stopped reading: answered below
            await self.app(scope, counted, guarded)
        if exceeded and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        response = answer(Request(scope, nothing), too_large(self.limit))
        await response(scope, nothing, send)


class SecurityHeaders:
    """The browser's protections on pages, ``no-store`` on answers (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        page = path == PAGES or path.startswith(PAGES + "/")
        static = path.startswith(STATIC)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if not static:
                    headers["Cache-Control"] = "no-store"
                if page:
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                    headers.setdefault("X-Frame-Options", "DENY")
            await send(message)

        await self.app(scope, receive, with_headers)

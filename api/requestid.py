"""Request ids: every answer names the request it answers, and so does everything it caused.

The id is the request's ``X-Request-ID`` when that is a UUID (36 characters with dashes, or 32
hex digits, as proxies make them: nginx's ``$request_id``), else a new one (uuid4, 32 hex
digits); another one is never echoed. Only ids of that shape are taken because the id is stored
in the events, which erasure does not reach: free text sent there (a resident id number, a
name) would be kept for ever. It is returned in ``X-Request-ID`` on every answer (problems, the 413 of
:mod:`api.limits`, the 500 of an unexpected error included), put on every log line written
while the request is handled (:data:`runtime.logs.request_id`), and recorded in the events the
request causes (``Actor.request_id``, from :attr:`api.tokens.Principal.actor`).

One access line per request (logger ``jiayi.access``), written when the answer is done:
method, the route's template (``/patients/{patient_id}``, ``-`` when no route matched: never
the path as sent or its query string), status, duration in ms and the request id. It replaces
uvicorn's access log.

:class:`JiayiAPI` places :class:`RequestIds` around the whole application, outside Starlette's
own error middleware, so that nothing answers without the header.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.logs import request_id

HEADER = "X-Request-ID"
VALID = re.compile(
    r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"
)

access = logging.getLogger("jiayi.access")


def accepted(sent: str | None) -> str:
    """The id of a request that sent ``sent`` in ``X-Request-ID`` (see the module)."""
    if sent is not None and VALID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request (``-``: none matched)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "-"


class RequestIds:
    """Pure ASGI: the request id in context and in the answer, and the access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = accepted(Headers(scope=scope).get(HEADER))
        token = request_id.set(rid)
        began = time.perf_counter()
        status = 500  # unless an answer starts

        async def named(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, named)
        finally:
            duration = (time.perf_counter() - began) * 1000
            route = route_template(scope)
            access.info(
                "%s %s %d %.1f ms",
                scope["method"],
                route,
                status,
                duration,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration, 1),
                },
            )
            request_id.reset(token)


class JiayiAPI(FastAPI):
    """FastAPI with :class:`RequestIds` outermost (around Starlette's error middleware)."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIds(super().build_middleware_stack())

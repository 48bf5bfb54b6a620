"""Request metrics and ``GET /metrics`` (see :mod:`jiayi.metrics`).

:class:`RequestMetrics` is pure ASGI, outermost, so every answer is counted, a 413 of the body
limit included: per method, *route template* (``/patients/{patient_id}``, never the path a
request named: no patient or referral id in a label; ``unmatched`` for what no route took) and
status class (``2xx`` ... ``5xx``), with its duration. It only reads the route the router left
in the scope and the status of the answer's start: nothing is buffered.

``/metrics`` on the API is off unless ``JIAYI_METRICS_ON_API`` (no token: expose it only where
the API is not reachable from outside the operators' network); ``JIAYI_METRICS_PORT`` serves the
same on a port of its own (the workers do only that).
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jiayi.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "unmatched"
CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
#: Methods counted by name; any other a client sends is ``other`` (labels stay a closed set).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts and times every HTTP answer by method, route template and status class."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception before the answer started becomes a 500

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            labels = (method, template, CLASSES.get(status // 100, "other"))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_DURATION.labels(*labels).observe(time.perf_counter() - began)


def install(api: FastAPI) -> None:
    """``GET /metrics`` (text exposition), read in a worker thread: the scrape-time sources
    query the database."""

    @api.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

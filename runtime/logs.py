"""How every jiayi process logs: one setup, plain text or one JSON object per line.

:func:`configure` is called once by the command line (``jiayi.cli``) before any command runs,
with ``JIAYI_LOG_FORMAT`` (``text``, the default, or ``json``). Every record goes to standard
error through one handler on the root logger, uvicorn's loggers included (their own handlers
removed; its access log is replaced by the API's line per request, ``api.requestid``).

- ``text``: ``2026-06-01T01:02:03.456Z INFO jiayi.api message [request_id=...]``.
- ``json``: ``{"time": "2026-06-01T01:02:03.456Z", "level": "INFO", "logger": "jiayi.api",
  "message": "...", "request_id": "...", ...}``: time in ISO 8601 UTC, the context fields a
  record carries (``request_id`` while a request is handled, ``duty`` for leadership changes,
  the access line's ``method``, ``route``, ``status``, ``duration_ms``; anything passed as
  ``extra``), an exception as one ``exception`` field (its traceback as text).

The request id lives in a context variable (:data:`request_id`), set by the API for the time a
request is handled; :class:`ContextFilter` copies it onto every record written meanwhile, from
any thread the request's work runs in (anyio copies the context into worker threads).

Nothing here adds personal data: records hold what their callers wrote, and jiayi's callers
write ids, codes and positions (never names, resident id numbers or search terms); the access
line names the route's template (``/patients/{patient_id}``), never the path or query string.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

#: The id of the request being handled (None: not handling one).
request_id: ContextVar[str | None] = ContextVar("jiayi_request_id", default=None)

#: Attributes every LogRecord has: anything else on a record is a context field.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)
#: uvicorn's loggers: their handlers are removed so that their records reach ours.
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
#: The format :func:`configure` set (None: not configured: a library use, the tests).
_configured: LogFormat | None = None


def current_request_id() -> str | None:
    return request_id.get()


class ContextFilter(logging.Filter):
    """Puts the request id being handled on every record (unless the record names one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


def _utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context fields (its ``extra``, the request id), None left out."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in context_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger message [request_id=...]`` (see the module)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        rid = getattr(record, "request_id", None)
        if rid is not None:
            line += f" [request_id={rid}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def handler(form: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    out.addFilter(ContextFilter())
    return out


def configure(form: LogFormat, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """The one logging setup of a jiayi process (see the module). Called again, it replaces
    what it set before."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(form, stream))
    root.setLevel(level)
    for name in UVICORN:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # uvicorn's access log is replaced by the API's own line per request (api.requestid)
    logging.getLogger("uvicorn.access").disabled = True
    global _configured
    _configured = form


def announce(text: str, logger: str = "jiayi") -> None:
    """A message for the operator starting a command: printed as it is with text logs, one
    record with JSON logs (so that every line such a process writes is JSON)."""
    if _configured == "json":
        logging.getLogger(logger).info(text)
    else:
        print(text, flush=True)

"""``Idempotency-Key`` on POST commands: a retried request returns the first answer.

Stored per caller (the token's hash), key, method and path with a hash of the request. The
first request claims the key before it runs; a concurrent duplicate gets 409 until the first
finishes; the same key with another request body gets 422. Answers the client should retry
(401, 5xx) are not kept. A claim left unfinished (the process died while the request ran) is
taken over by the same request after ``STALE_CLAIM``; rows older than ``KEEP`` are deleted a
few at a time as keys are claimed.

Nothing personal is kept: the request's hash is keyed with the caller's bearer token (which is
never stored: a body holding a national id cannot be confirmed by hashing guesses), command
answers are ids and positions, and POSTs that only read (:data:`READ_ONLY`: a search, whose
answer names patients) are not stored at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.database import Cursor, SideStore
from api.errors import UNAVAILABLE, problem, unavailable
from api.tokens import token_hash

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
#: A claim still without an answer after this is taken to be abandoned (its process died
#: between claiming and completing); the next identical request takes it over. Far longer
#: than any request runs.
STALE_CLAIM = timedelta(seconds=60)
#: How long answers are kept for replay; older rows are deleted.
KEEP = timedelta(hours=24)
#: Expired rows deleted on each claim (a few: cheap, and ahead of the rate they expire at).
PURGE_BATCH = 10
#: POSTs that only read (the term is personal data, so it travels in a body, not a URL). A
#: retry simply reads again; keeping the answer would keep patients' names at rest for
#: ``KEEP``, replay them unrecorded by the read access log, and after an erasure. They pass
#: through, with or without a key. (``tests/unit/test_idempotency.py``: every other POST
#: route answers a command's result.)
READ_ONLY = frozenset({"/patients/search"})


def request_digest(token: str, method: str, path: str, query: str, body: bytes) -> str:
    """What makes two requests with one key "the same request": an HMAC keyed with the
    caller's bearer token, so that the stored hash of a body holding personal data cannot be
    matched against guesses by someone who reads the table."""
    return hmac.new(
        token.encode(),
        b"\0".join([method.encode(), path.encode(), query.encode(), body]),
        hashlib.sha256,
    ).hexdigest()


@dataclass(frozen=True)
class Stored:
    request_hash: str
    status: int | None
    body: str | None


class IdempotencyStore:
    def __init__(self, store: SideStore) -> None:
        self.store = store

    def claim(
        self,
        principal: str,
        key: str,
        method: str,
        path: str,
        request_hash: str,
        now: datetime | None = None,
    ) -> Stored | None:
        """Claim ``key`` for this request; None when claimed (or an abandoned claim of the
        same request taken over), else what is already there."""
        now = now or datetime.now(UTC)
        created = now.isoformat(timespec="microseconds")
        with self.store.cursor() as cur:
            self._purge(cur, (now - KEEP).isoformat(timespec="microseconds"))
            if self.store.is_postgres:
                cur.execute(
                    "INSERT INTO api_idempotency (principal, idem_key, method, path,"
                    " request_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (principal, idem_key) DO NOTHING",
                    (principal, key, method, path, request_hash, created),
                )
            else:
                cur.execute(
                    "INSERT OR IGNORE INTO api_idempotency (principal, idem_key, method, path,"
                    " request_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (principal, key, method, path, request_hash, created),
                )
            if cur.rowcount == 1:
                return None
            cur.execute(
                "SELECT request_hash, status, body, created_at FROM api_idempotency"
                " WHERE principal = ? AND idem_key = ?",
                (principal, key),
            )
            row = cur.fetchone()
            if row is None:
                return None  # released in between (as before: this request runs unclaimed)
            stale = (now - STALE_CLAIM).isoformat(timespec="microseconds")
            if row[1] is None and row[0] == request_hash and row[3] < stale:
                # compare-and-set on created_at: of two retries only one takes over
                cur.execute(
                    "UPDATE api_idempotency SET created_at = ? WHERE principal = ?"
                    " AND idem_key = ? AND status IS NULL AND created_at = ?",
                    (created, principal, key, row[3]),
                )
                if cur.rowcount == 1:
                    return None
        return Stored(row[0], row[1], row[2])

    def _purge(self, cur: Cursor, before: str) -> None:
        """Delete a few rows created before ``before`` (by the ``created_at`` index)."""
        lock = " FOR UPDATE SKIP LOCKED" if self.store.is_postgres else ""
        cur.execute(
            "DELETE FROM api_idempotency WHERE (principal, idem_key) IN (SELECT principal,"
            " idem_key FROM api_idempotency WHERE created_at < ? ORDER BY created_at LIMIT ?"
            f"{lock})",
            (before, PURGE_BATCH),
        )

    def complete(self, principal: str, key: str, status: int, body: str) -> None:
        with self.store.cursor() as cur:
            cur.execute(
                "UPDATE api_idempotency SET status = ?, body = ? WHERE principal = ? AND idem_key = ?",
                (status, body, principal, key),
            )

    def release(self, principal: str, key: str) -> None:
        with self.store.cursor() as cur:
            cur.execute(
                "DELETE FROM api_idempotency WHERE principal = ? AND idem_key = ? AND status IS NULL",
                (principal, key),
            )


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class IdempotencyMiddleware(BaseHTTPMiddleware):
    """Applies to POST requests that carry a bearer token and an ``Idempotency-Key``."""

    def __init__(self, app: Callable[..., Awaitable[None]], store: IdempotencyStore) -> None:
        super().__init__(app)
        self.idempotency = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Requests that cannot be idempotent commands (not a POST, a POST that only reads,
        or no key) pass straight through, without the cost of wrapping them."""
        header = HEADER.lower().encode()
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] in READ_ONLY
            or not any(name == header for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        key = request.headers.get(HEADER)
        token = _bearer(request)
        if request.method != "POST" or key is None or token is None:
            return await call_next(request)
        if not _VALID_KEY.match(key):
            return problem(
                422,
                "validation-failed",
                f"invalid value for header.{HEADER}: 1-200 visible ASCII characters",
                field=f"header.{HEADER}",
            )
        body = await request.body()
        path = request.url.path
        digest = request_digest(token, request.method, path, request.url.query, body)
        principal = token_hash(token)
        try:
            stored = await run_in_threadpool(
                self.idempotency.claim, principal, key, request.method, path, digest
            )
        except UNAVAILABLE:
            return unavailable()
        if stored is not None:
            return self._replay(stored, digest)
        try:
            response = await call_next(request)
        except BaseException:
            await self._release(principal, key)
            raise
        chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
        content = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
        if response.status_code == 401 or response.status_code >= 500:
            await self._release(principal, key)
        else:
            # If this fails the command still ran; a retry runs it again and meets the rules.
            with contextlib.suppress(*UNAVAILABLE):
                await run_in_threadpool(
                    self.idempotency.complete,
                    principal,
                    key,
                    response.status_code,
                    content.decode("utf-8", "replace"),
                )
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(content, response.status_code, headers=headers)

    async def _release(self, principal: str, key: str) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await run_in_threadpool(self.idempotency.release, principal, key)

    @staticmethod
    def _replay(stored: Stored, digest: str) -> Response:
        if stored.request_hash != digest:
            return problem(
                422,
                "idempotency-key-reused",
                f"this {HEADER} was used for a different request",
                field=f"header.{HEADER}",
            )
        if stored.status is None:
            return problem(
                409,
                "idempotency-request-in-progress",
                "the first request with this key is still running",
                headers={"Retry-After": "1"},
            )
        media = "application/problem+json" if stored.status >= 400 else "application/json"
        return Response(
            stored.body or "",
            stored.status,
            media_type=media,
            headers={"Idempotent-Replayed": "true"},
        )

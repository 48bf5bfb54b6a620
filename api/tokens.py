"""Bearer tokens: who is calling (a person of an organisation, with a role).

Only the SHA-256 of a token is stored. A token reads ``jy_<token id>_<secret>``; the token id
is public (listed, used to revoke), the secret is shown once when the token is issued.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from api.database import SideStore
from domain.common import Actor, stable_id
from projections.queries import Reader, Scope
from runtime.logs import current_request_id


class Role(StrEnum):
    CENTER_STAFF = "center_staff"
    HOSPITAL_STAFF = "hospital_staff"
    COORDINATOR = "coordinator"
    AUDITOR = "auditor"
    ADMINISTRATOR = "administrator"


#: Roles acting for one organisation (the token names it).
ORG_ROLES = {Role.CENTER_STAFF: "community_center", Role.HOSPITAL_STAFF: "hospital"}


@dataclass(frozen=True)
class Principal:
    """The caller a token identifies."""

    token_id: str
    staff_id: str
    role: Role
    org_id: UUID | None = None
    district: str | None = None

    @property
    def actor(self) -> Actor:
        """Who every write records, with the request being handled (``api.requestid``).
        Roles without an organisation act for a stable pseudo-org."""
        org = self.org_id or stable_id("role", self.role, self.district or "")
        return Actor(self.staff_id, org, request_id=current_request_id())

    @property
    def reader(self) -> Reader:
        """Who the read access log records for this caller's reads."""
        return Reader(str(self.staff_id), str(self.role), self.org_id, self.district)

    @property
    def scope(self) -> Scope:
        """What this caller may read, naming the caller (every read of a patient's data
        through it is recorded in the read access log)."""
        who = self.reader
        if self.role in (Role.AUDITOR, Role.ADMINISTRATOR):
            return Scope(everything=True, reader=who)
        if self.role == Role.COORDINATOR:
            return Scope(district=self.district, reader=who)
        return Scope(
            org_id=self.org_id, org_kind=ORG_ROLES[self.role], district=self.district, reader=who
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "staff_id": self.staff_id,
            "role": str(self.role),
            "org_id": str(self.org_id) if self.org_id else None,
            "district": self.district,
        }


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    staff_id: str
    role: str
    org_id: str | None
    district: str | None
    created_at: str
    revoked_at: str | None


class TokenStore:
    """Issue, look up (with a short cache) and revoke tokens."""

    #: Seconds a looked-up token is trusted without asking the database again.
    CACHE_SECONDS = 5.0

    def __init__(self, store: SideStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def issue(
        self, staff_id: str, role: Role, org_id: UUID | None = None, district: str | None = None
    ) -> tuple[str, Principal]:
        """A new token (returned once, in clear) for ``staff_id``."""
        if role in ORG_ROLES and org_id is None:
            raise ValueError(f"a {role} token names an organisation")
        if role == Role.COORDINATOR and not district:
            raise ValueError("a coordinator token names a district")
        token_id = secrets.token_hex(4)
        token = f"jy_{token_id}_{secrets.token_urlsafe(32)}"
        with self.store.cursor() as cur:
            cur.execute(
                "INSERT INTO api_tokens (token_hash, token_id, staff_id, org_id, role, district,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token_hash(token),
                    token_id,
                    staff_id,
                    str(org_id) if org_id else None,
                    str(role),
                    district,
                    datetime.now(UTC).isoformat(),
                ),
            )
        return token, Principal(token_id, staff_id, role, org_id, district)

    def principal(self, token: str) -> Principal | None:
        """The caller ``token`` identifies, or None (unknown or revoked)."""
        return self.principal_by_hash(token_hash(token))

    def principal_by_hash(self, digest: str) -> Principal | None:
        """The caller the token with this SHA-256 identifies (a page's session keeps only the
        hash), or None (unknown or revoked)."""
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        with self.store.cursor() as cur:
            cur.execute(
                "SELECT token_id, staff_id, role, org_id, district FROM api_tokens"
                " WHERE token_hash = ? AND revoked_at IS NULL",
                (digest,),
            )
            row = cur.fetchone()
        found = None
        if row is not None:
            found = Principal(
                token_id=row[0],
                staff_id=row[1],
                role=Role(row[2]),
                org_id=UUID(row[3]) if row[3] else None,
                district=row[4],
            )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, found)
        return found

    def list(self) -> list[TokenRecord]:
        with self.store.cursor() as cur:
            cur.execute(
                "SELECT token_id, staff_id, role, org_id, district, created_at, revoked_at"
                " FROM api_tokens ORDER BY created_at, token_id"
            )
            return [TokenRecord(*row) for row in cur.fetchall()]

    def revoke(self, token_id: str) -> bool:
        """Revoke by public token id; True if a live token was revoked. The pages' sessions
        signed in with it end with it."""
        with self.store.cursor() as cur:
            cur.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(), token_id),
            )
            changed = cur.rowcount > 0
            cur.execute(
                "DELETE FROM web_sessions WHERE token_hash IN"
                " (SELECT token_hash FROM api_tokens WHERE token_id = ?)",
                (token_id,),
            )
        with self._lock:
            self._cache.clear()
        return changed

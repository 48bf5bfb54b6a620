"""Fakes (not mocks) for tests that need a collaborator's interface without its machinery."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from projections.queries import Page, Scope


class EmptyQueries:
    """A read side with nothing in it: every list is empty and every item missing."""

    def position(self) -> int:
        return 0

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        return True

    def patient(
        self, scope: Scope, patient_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        return None

    def search_patients(self, scope: Scope, text: str, page: Page) -> list[dict[str, Any]]:
        return []

    def timeline(
        self,
        scope: Scope,
        patient_id: UUID,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: list[str] | None = None,
        page: Page = Page(),
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]] | None:
        return None

    def referral(
        self, scope: Scope, referral_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        return None

    def quota(self, scope: Scope, quota_id: UUID) -> dict[str, Any] | None:
        return None

    def team_workload(
        self, scope: Scope, team_id: UUID, today: date, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        return None

    def teams(self, scope: Scope, page: Page) -> list[dict[str, Any]]:
        return []

    def hospital_worklist(
        self, scope: Scope, hospital_id: UUID, page: Page
    ) -> list[dict[str, Any]]:
        return []

    def center_worklist(
        self, scope: Scope, center_id: UUID, today: date, page: Page
    ) -> dict[str, list[dict[str, Any]]]:
        return {"returns_awaiting_acknowledgement": [], "overdue_follow_ups": []}

    def open_quotas(self, scope: Scope, page: Page) -> list[dict[str, Any]]:
        return []

    def kpis(
        self,
        scope: Scope,
        start: date,
        end: date,
        center_id: UUID | None = None,
        district: str | None = None,
        as_of: datetime | None = None,
    ) -> dict[str, Any]:
        return {}

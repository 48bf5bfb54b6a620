"""What readers (API, web pages, CLI) may ask of the views. Implemented by the projections.

Every method reads views only (never aggregates). Results are JSON-ready dicts: ids as str,
moments as ISO 8601 text. ``as_of`` (a timezone-aware moment) reads the views as they stood
then (replayed into a separate store); ``None`` reads the live views.
Scope: ``Scope`` says which organisation (or district, or everything) the reader may see;
rows outside the scope are not returned; a single item outside it (a patient, a referral, a
team's workload, an organisation's worklist) reads as missing: None. It also names the
``Reader`` (who is asking): every read that returns a patient's data is recorded in the read
access log (:mod:`audit.access`) against that reader, by the implementation, not the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol
from uuid import UUID

from eventstore.errors import DamagedEvent


@dataclass(frozen=True)
class Reader:
    """Who reads: recorded with every read of a patient's data (the read access log)."""

    staff_id: str
    role: str
    org_id: UUID | None = None
    district: str | None = None


@dataclass(frozen=True)
class Scope:
    """What a reader may see: everything, one district, or one organisation; and who reads."""

    everything: bool = False
    district: str | None = None
    org_id: UUID | None = None
    #: "community_center" or "hospital" when org_id is set.
    org_kind: str | None = None
    #: Who reads (API and pages always name one; a read without one is recorded as
    #: unattributed).
    reader: Reader | None = None


@dataclass(frozen=True)
class Page:
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class Following:
    """Where the views stand against the log (readiness, ``/ready``)."""

    #: The log position every view has processed up to.
    position: int
    #: The last position recorded in the log.
    log_position: int
    #: When the first event the views lack was recorded (None: they lack none).
    waiting_since: datetime | None = None
    #: The damaged event the views stopped before, if they did.
    damaged: DamagedEvent | None = None


class Queries(Protocol):
    def position(self) -> int:
        """The log position every view has processed up to."""

    def log_position(self) -> int:
        """The last position recorded in the log (the views may still be behind it)."""

    def following(self) -> Following:
        """Where the views stand against the log, and since when they lack an event."""

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until the views reach ``position`` (read-your-writes); False on timeout."""

    def patient(
        self, scope: Scope, patient_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        """Registry entry (name, sex, birth date, center, district, tags, current contract)."""

    def search_patients(self, scope: Scope, text: str, page: Page) -> list[dict[str, Any]]:
        """Patients by name (substring) or id / national id (exact), within scope."""

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
        """Entries ordered by when they happened: at, kind, summary, org_id, actor, links."""

    def open_obligations(
        self, scope: Scope, patient_id: UUID, today: date, as_of: datetime | None = None
    ) -> list[dict[str, Any]] | None:
        """The patient's open follow-up obligations (id, reason, source_id and source kind,
        window_start, due, face_to_face, risk_assessment, overdue on ``today``), earliest due
        first; visible as the timeline is (None: absent or outside the scope)."""

    def referral(
        self, scope: Scope, referral_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        """One referral with its steps (each with at, actor, org) and due dates."""

    def quota(self, scope: Scope, quota_id: UUID) -> dict[str, Any] | None:
        """One quota with its bookings, slots left and release time."""

    def team_workload(
        self, scope: Scope, team_id: UUID, today: date, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        """Per team and per member: contracts (key population), referrals, returns, follow-ups."""

    def teams(self, scope: Scope, page: Page) -> list[dict[str, Any]]:
        """Teams in scope with their headline workload counts."""

    def hospital_worklist(
        self, scope: Scope, hospital_id: UUID, page: Page
    ) -> list[dict[str, Any]] | None:
        """Referrals awaiting decision: urgent and green-channel first, then oldest.
        None when the hospital is absent or outside the scope."""

    def center_worklist(
        self,
        scope: Scope,
        center_id: UUID,
        today: date,
        page: Page,
        patient_id: UUID | None = None,
    ) -> dict[str, list[dict[str, Any]]] | None:
        """Returns awaiting acknowledgement, overdue follow-ups, and transfer requests (asked of
        the center, to release or decline; asked by it, to withdraw) of a community center;
        with ``patient_id``, only that patient's rows. None when the center is absent or
        outside the scope."""

    def open_quotas(self, scope: Scope, page: Page) -> list[dict[str, Any]]:
        """Quotas with slots left and their release time."""

    def kpis(
        self,
        scope: Scope,
        start: date,
        end: date,
        center_id: UUID | None = None,
        district: str | None = None,
        as_of: datetime | None = None,
    ) -> dict[str, Any] | None:
        """The KPI figures (formulas in projections/kpis.py and docs) for a center or district;
        None when the center or district named is absent or outside the scope."""

    def access_entries(
        self, scope: Scope, patient_id: UUID, page: Page
    ) -> list[dict[str, Any]] | None:
        """The read access log about one patient, newest first: at, staff_id, org_id,
        org_name, role, district, resource, rows, position. Auditors only (``everything``):
        None for any other scope, or when the patient does not exist."""

    def access_report(self, scope: Scope, patient_id: UUID) -> dict[str, Any] | None:
        """A patient's access report: every recorded read about them, oldest first, and a
        summary per reader. Auditors only, as :meth:`access_entries`."""

    def flush(self) -> None:
        """Write out what the read access log holds queued (a clean stop calls it)."""

    def patient_id_by_national_id(self, national_id: str) -> UUID | None:
        """Internal, NOT scoped: the patient registered with this resident id number, if any.
        For commands that name a patient as an encounter does (a hospital's return); the
        domain checks the rest. Never answer a reader with it."""

"""Care relationships: which organisation is in a care relation with which patient, and since
and until when. The one source of what an organisation may read (:mod:`projections.scope`).

A relation is started and ended by events, never by a role:

=============  ====================================  ==========================================
kind           started by                            ended by
=============  ====================================  ==========================================
``home``       ``Patient.Registered`` (the center),  ``Patient.Transferred`` (the old center)
               ``Patient.Transferred`` (the new one)
``referral``   ``Referral.Requested`` (the hospital  ``Referral.Rejected``, ``Referral.Cancelled``,
               it is addressed to)                   ``Referral.ReturnAcknowledged`` (loop closed)
``return``     ``Referral.ReturnStarted`` (the       ``Referral.ReturnAcknowledged``
               hospital, no upward referral)
``transfer``   ``Patient.TransferRequested`` (the    ``Patient.TransferReleased``/``Declined``/
               center asking for the patient)        ``Withdrawn``, ``Patient.Transferred``
=============  ====================================  ==========================================

Ended relations are kept (``ended_at``): what an organisation saw of a referral stays
readable to it, and auditors see every relation on the patient's timeline. A patient's current
``home`` and ``transfer`` rows have the ids ``home:<patient>`` and ``transfer:<patient>``; an
ended one is kept as ``<that id>:<position that started it>``. A referral's row is its id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from domain.patients import Patient
from domain.referrals import Referral
from projections.base import Projection, Row, Rows, handles
from projections.events import Ev
from projections.store import Table

TXT, INT = "text", "int"

HOME, REFERRAL, RETURN, TRANSFER = "home", "referral", "return", "transfer"


class RelationsProjection(Projection):
    name = "relations"
    tables: ClassVar[tuple[Table, ...]] = (
        Table(
            "v_relations",
            (
                ("id", TXT),
                ("org_id", TXT),
                ("patient_id", TXT),
                ("kind", TXT),
                #: What the relation comes from: the referral, or the patient (home, transfer).
                ("source_id", TXT),
                ("started_at", TXT),
                ("started_recorded_at", TXT),
                ("started_position", INT),
                ("ended_at", TXT),
                ("ended_recorded_at", TXT),
                ("ended_position", INT),
                #: The event that ended it (``Referral.Rejected`` ...).
                ("ended_by", TXT),
                #: A transfer's requested team and the consent it cites.
                ("team_id", TXT),
                ("note", TXT),
            ),
            ("id",),
            (("org_id", "patient_id"), ("patient_id",)),
        ),
    )

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _start(
        rows: Rows,
        ev: Ev,
        id: str,
        kind: str,
        org_id: str,
        patient_id: str,
        source_id: str,
        **extra: str | None,
    ) -> None:
        rows.put(
            "v_relations",
            {
                "id": id,
                "org_id": org_id,
                "patient_id": patient_id,
                "kind": kind,
                "source_id": source_id,
                "started_at": ev.at,
                "started_recorded_at": ev.timestamp,
                "started_position": ev.position,
                "ended_at": None,
                "ended_recorded_at": None,
                "ended_position": None,
                "ended_by": None,
                "team_id": None,
                "note": None,
                **extra,
            },
        )

    @staticmethod
    def _ended(row: Row, ev: Ev) -> Row:
        return {
            **row,
            "ended_at": ev.at,
            "ended_recorded_at": ev.timestamp,
            "ended_position": ev.position,
            "ended_by": ev.name,
        }

    def _end(self, rows: Rows, ev: Ev, id: str) -> None:
        row = rows.get("v_relations", id)
        if row is not None and row["ended_at"] is None:
            rows.put("v_relations", self._ended(row, ev))

    def _close(self, rows: Rows, ev: Ev, current: str) -> None:
        """End the patient's current relation of a kind (row ``current``: ``home:<patient>``,
        ``transfer:<patient>``), kept under the id of the position that started it, so that
        the next one of that kind can take the current id."""
        row = rows.get("v_relations", current)
        if row is None:
            return
        rows.delete("v_relations", current)
        kept = f"{current}:{row['started_position']}"
        rows.put("v_relations", self._ended({**row, "id": kept}, ev))

    # --- the patient's center -----------------------------------------------------------------

    @handles(Patient, "Registered")
    def registered(self, ev: Ev, rows: Rows) -> None:
        patient = ev.aggregate_id
        self._start(rows, ev, f"{HOME}:{patient}", HOME, ev.data["center_id"], patient, patient)

    @handles(Patient, "Transferred")
    def transferred(self, ev: Ev, rows: Rows) -> None:
        patient = ev.aggregate_id
        self._close(rows, ev, f"{HOME}:{patient}")
        self._close(rows, ev, f"{TRANSFER}:{patient}")
        self._start(rows, ev, f"{HOME}:{patient}", HOME, ev.data["center_id"], patient, patient)

    # --- a center asking for the patient ----------------------------------------------------

    @handles(Patient, "TransferRequested")
    def transfer_requested(self, ev: Ev, rows: Rows) -> None:
        patient, data = ev.aggregate_id, ev.data
        self._start(
            rows,
            ev,
            f"{TRANSFER}:{patient}",
            TRANSFER,
            data["center_id"],
            patient,
            patient,
            team_id=data["team_id"],
            note=data["consent"],
        )

    @handles(Patient, "TransferReleased", "TransferDeclined", "TransferWithdrawn")
    def transfer_settled(self, ev: Ev, rows: Rows) -> None:
        self._close(rows, ev, f"{TRANSFER}:{ev.aggregate_id}")

    # --- hospitals ------------------------------------------------------------------------

    @handles(Referral, "Requested")
    def requested(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, REFERRAL)

    @handles(Referral, "ReturnStarted")
    def return_started(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, RETURN)

    def _referral(self, ev: Ev, rows: Rows, kind: str) -> None:
        data: dict[str, Any] = ev.data
        referral = ev.aggregate_id
        self._start(rows, ev, referral, kind, data["hospital_id"], data["patient_id"], referral)

    @handles(Referral, "Rejected", "Cancelled", "ReturnAcknowledged")
    def referral_closed(self, ev: Ev, rows: Rows) -> None:
        self._end(rows, ev, ev.aggregate_id)

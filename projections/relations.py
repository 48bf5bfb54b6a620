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

from collections.abc import Mapping
from dataclasses import dataclass, field
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

    # --- the events that start and end relations (:func:`relation_changes`) ------------------

    @handles(
        Patient,
        "Registered",
        "Transferred",
        "TransferRequested",
        "TransferReleased",
        "TransferDeclined",
        "TransferWithdrawn",
    )
    def patient_changed(self, ev: Ev, rows: Rows) -> None:
        self._apply(ev, rows)

    @handles(Referral, "Requested", "ReturnStarted", "Rejected", "Cancelled", "ReturnAcknowledged")
    def referral_changed(self, ev: Ev, rows: Rows) -> None:
        self._apply(ev, rows)

    def _apply(self, ev: Ev, rows: Rows) -> None:
        for change in relation_changes(ev.name, ev.aggregate_id, ev.data):
            if isinstance(change, Start):
                self._start(
                    rows,
                    ev,
                    change.id,
                    change.kind,
                    change.org_id,
                    change.patient_id,
                    change.source_id,
                    **change.extra,
                )
            elif change.id.startswith((f"{HOME}:", f"{TRANSFER}:")):
                self._close(rows, ev, change.id)
            else:
                self._end(rows, ev, change.id)


@dataclass(frozen=True)
class Start:
    """A relation starts: row ``id`` (a patient's current ``home:``/``transfer:`` id, or the
    referral's id)."""

    id: str
    kind: str
    org_id: Any
    patient_id: Any
    source_id: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    """The relation with row ``id`` ends (if it is active)."""

    id: str


def relation_changes(name: str, aggregate_id: Any, data: Mapping[str, Any]) -> list[Start | End]:
    """The relations event ``name`` (``Aggregate.EventName``) of ``aggregate_id`` starts and
    ends, in order: the one statement of the table above, used by the view and by the Kafka
    relay (:mod:`consumers.routing`), which folds them as it reads the log. ``data`` is the
    event's fields (ids as the caller has them: text in the views, UUIDs in the relay)."""
    home, transfer = f"{HOME}:{aggregate_id}", f"{TRANSFER}:{aggregate_id}"
    if name == "Patient.Registered":
        return [Start(home, HOME, data["center_id"], aggregate_id, aggregate_id)]
    if name == "Patient.Transferred":
        return [
            End(home),
            End(transfer),
            Start(home, HOME, data["center_id"], aggregate_id, aggregate_id),
        ]
    if name == "Patient.TransferRequested":
        extra = {"team_id": data["team_id"], "note": data["consent"]}
        return [Start(transfer, TRANSFER, data["center_id"], aggregate_id, aggregate_id, extra)]
    if name in (
        "Patient.TransferReleased",
        "Patient.TransferDeclined",
        "Patient.TransferWithdrawn",
    ):
        return [End(transfer)]
    if name in ("Referral.Requested", "Referral.ReturnStarted"):
        kind = REFERRAL if name == "Referral.Requested" else RETURN
        return [
            Start(str(aggregate_id), kind, data["hospital_id"], data["patient_id"], aggregate_id)
        ]
    if name in ("Referral.Rejected", "Referral.Cancelled", "Referral.ReturnAcknowledged"):
        return [End(str(aggregate_id))]
    return []

"""Patient timeline: every event about a patient, across organisations, in the order it happened.

Each entry: when it happened (``at``), when it was recorded, kind (``category.step``), acting
organisation and person, a one-line summary, and links (contract, referral, booking). The
projection keeps a small table of references (org and team names, which patient a contract,
referral, booking or follow-up stream belongs to) so later events find their patient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from domain.contracts import Contract
from domain.followups import FollowUps
from domain.organisations import Organisation
from domain.patients import Patient
from domain.quotas import Quota
from domain.referrals import Referral
from domain.teams import CareTeam
from projections.base import Projection, Row, Rows, handles
from projections.events import Ev
from projections.store import Table

TXT, INT = "text", "int"

#: Entry categories a reader may filter by (a kind is ``category.step``).
CATEGORIES = (
    "registry",
    "contract",
    "team",
    "referral",
    "return",
    "booking",
    "follow_up",
    "transfer",
    "access",
)


class TimelineProjection(Projection):
    name = "timeline"
    tables: ClassVar[tuple[Table, ...]] = (
        Table(
            "v_timeline",
            (
                ("position", INT),
                ("patient_id", TXT),
                ("at", TXT),
                ("recorded_at", TXT),
                ("kind", TXT),
                ("summary", TXT),
                ("org_id", TXT),
                ("org_name", TXT),
                ("staff_id", TXT),
                ("contract_id", TXT),
                ("referral_id", TXT),
                ("booking_id", TXT),
                ("hospital_id", TXT),
            ),
            ("position",),
            (("patient_id", "at"),),
        ),
        Table(
            "v_timeline_refs",
            (
                ("id", TXT),
                ("kind", TXT),
                ("patient_id", TXT),
                ("center_id", TXT),
                ("hospital_id", TXT),
                ("name", TXT),
                ("extra", TXT),
            ),
            ("id",),
        ),
    )

    # --- helpers ------------------------------------------------------------------------

    def _put_ref(self, rows: Rows, id: str, kind: str, **values: Any) -> None:
        rows.put("v_timeline_refs", {"id": id, "kind": kind, **values})

    def _referral_ref(self, ev: Ev, rows: Rows) -> None:
        """What later steps of a referral (requested up, or a return started) look up."""
        data = ev.data
        self._put_ref(
            rows,
            ev.aggregate_id,
            "referral",
            patient_id=data["patient_id"],
            center_id=data["center_id"],
            hospital_id=data["hospital_id"],
            name=data["department"],
        )

    def _name(self, rows: Rows, id: str | None) -> str:
        ref = rows.get("v_timeline_refs", id) if id else None
        return (ref or {}).get("name") or "?"

    def _entry(
        self, ev: Ev, rows: Rows, patient_id: str | None, kind: str, summary: str, **links: Any
    ) -> None:
        if patient_id is None:
            return
        org = ev.org
        rows.append(
            "v_timeline",
            {
                "position": ev.position,
                "patient_id": patient_id,
                "at": ev.at,
                "recorded_at": ev.timestamp,
                "kind": kind,
                "summary": summary,
                "org_id": org,
                "org_name": self._name(rows, org),
                "staff_id": ev.staff,
                **links,
            },
        )

    def _ref_of(self, rows: Rows, id: str) -> Row:
        return rows.get("v_timeline_refs", id) or {}

    # --- reference data -----------------------------------------------------------------

    @handles(Organisation, "Registered")
    def org(self, ev: Ev, rows: Rows) -> None:
        self._put_ref(rows, ev.aggregate_id, "org", name=ev.data["name"], extra=ev.data["kind"])

    @handles(CareTeam, "Formed")
    def team(self, ev: Ev, rows: Rows) -> None:
        self._put_ref(
            rows, ev.aggregate_id, "team", name=ev.data["name"], center_id=ev.data["center_id"]
        )

    @handles(Quota, "Published")
    def quota(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        label = data.get("expert") or data.get("ward") or data["kind"]
        hospital = self._name(rows, data["hospital_id"])
        self._put_ref(
            rows,
            ev.aggregate_id,
            "quota",
            hospital_id=data["hospital_id"],
            name=f"{label} at {hospital} {data['department']} on {data['session_date']}",
        )

    @handles(FollowUps, "Opened")
    def followups_opened(self, ev: Ev, rows: Rows) -> None:
        self._put_ref(
            rows,
            ev.aggregate_id,
            "followups",
            patient_id=ev.data["patient_id"],
            center_id=ev.data["center_id"],
        )

    # --- registry -----------------------------------------------------------------------

    def _patient_at_center(self, ev: Ev, rows: Rows, kind: str, summary: str) -> None:
        """The patient now belongs to ``center_id`` of the event (registered or moved)."""
        center = ev.data["center_id"]
        self._put_ref(
            rows,
            ev.aggregate_id,
            "patient",
            patient_id=ev.aggregate_id,
            center_id=center,
            name=ev.data["district"],
        )
        self._entry(ev, rows, ev.aggregate_id, kind, f"{summary} {self._name(rows, center)}")

    @handles(Patient, "Registered")
    def patient_registered(self, ev: Ev, rows: Rows) -> None:
        self._patient_at_center(ev, rows, "registry.registered", "Registered at")

    @handles(Patient, "Tagged")
    def tagged(self, ev: Ev, rows: Rows) -> None:
        self._entry(
            ev,
            rows,
            ev.aggregate_id,
            "registry.tagged",
            f"Key population recorded: {ev.data['tag']}",
        )

    @handles(Patient, "Untagged")
    def untagged(self, ev: Ev, rows: Rows) -> None:
        self._entry(
            ev,
            rows,
            ev.aggregate_id,
            "registry.untagged",
            f"Key population removed: {ev.data['tag']}",
        )

    @handles(Patient, "Erased")
    def erased(self, ev: Ev, rows: Rows) -> None:
        """What the patient's entries held of them no longer opens (their key is destroyed);
        the erasure itself, with its legal ground, stays on the record."""
        self._entry(ev, rows, ev.aggregate_id, "registry.erased", f"Erased: {ev.data['reason']}")

    @handles(Patient, "MovedAway")
    def moved_away(self, ev: Ev, rows: Rows) -> None:
        self._entry(
            ev,
            rows,
            ev.aggregate_id,
            "registry.moved_away",
            f"Moved away to {ev.data['destination']}",
        )

    @handles(Patient, "Transferred")
    def transferred(self, ev: Ev, rows: Rows) -> None:
        self._patient_at_center(ev, rows, "registry.transferred", "Care moved to")

    @handles(Patient, "TransferRequested")
    def transfer_requested(self, ev: Ev, rows: Rows) -> None:
        center = self._name(rows, ev.data["center_id"])
        consent = ev.data["consent"]
        summary = f"Transfer to {center} requested (consent: {consent})"
        self._entry(ev, rows, ev.aggregate_id, "transfer.requested", summary)

    @handles(Patient, "TransferReleased")
    def transfer_released(self, ev: Ev, rows: Rows) -> None:
        summary = f"Released to {self._name(rows, ev.data['center_id'])}"
        self._entry(ev, rows, ev.aggregate_id, "transfer.released", summary)

    @handles(Patient, "TransferDeclined")
    def transfer_declined(self, ev: Ev, rows: Rows) -> None:
        center = self._name(rows, ev.data["center_id"])
        summary = f"Transfer to {center} declined: {ev.data['reason']}"
        self._entry(ev, rows, ev.aggregate_id, "transfer.declined", summary)

    @handles(Patient, "TransferWithdrawn")
    def transfer_withdrawn(self, ev: Ev, rows: Rows) -> None:
        summary = f"Transfer request of {self._name(rows, ev.data['center_id'])} withdrawn"
        self._entry(ev, rows, ev.aggregate_id, "transfer.withdrawn", summary)

    # --- contracts ----------------------------------------------------------------------

    @handles(Contract, "Signed")
    def signed(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        self._put_ref(
            rows,
            ev.aggregate_id,
            "contract",
            patient_id=data["patient_id"],
            center_id=data["center_id"],
        )
        team = self._name(rows, data["team_id"])
        self._entry(
            ev,
            rows,
            data["patient_id"],
            "contract.signed",
            f"Signed a {data['package']} contract with {team} ({data['start']} to {data['end']})",
            contract_id=ev.aggregate_id,
        )

    def _contract(self, ev: Ev, rows: Rows, kind: str, summary: str) -> None:
        self._entry(
            ev,
            rows,
            self._ref_of(rows, ev.aggregate_id).get("patient_id"),
            kind,
            summary,
            contract_id=ev.aggregate_id,
        )

    @handles(Contract, "Renewed")
    def renewed(self, ev: Ev, rows: Rows) -> None:
        years = ev.data["years"]
        self._contract(
            ev,
            rows,
            "contract.renewed",
            f"Contract renewed for {years} year(s), until {ev.data['end']}",
        )

    @handles(Contract, "Terminated")
    def terminated(self, ev: Ev, rows: Rows) -> None:
        self._contract(ev, rows, "contract.terminated", f"Contract terminated: {ev.data['reason']}")

    @handles(Contract, "Expired")
    def expired(self, ev: Ev, rows: Rows) -> None:
        self._contract(ev, rows, "contract.expired", f"Contract expired on {ev.data['on']}")

    @handles(Contract, "TeamChanged")
    def team_changed(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        old, new = self._name(rows, data["previous_team_id"]), self._name(rows, data["team_id"])
        self._contract(
            ev, rows, "team.changed", f"Team changed from {old} to {new}: {data['reason']}"
        )

    # --- referrals ----------------------------------------------------------------------

    @handles(Referral, "Requested")
    def requested(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        self._referral_ref(ev, rows)
        green = ", green channel" if data["green_channel"] else ""
        self._entry(
            ev,
            rows,
            data["patient_id"],
            "referral.requested",
            f"Referred to {self._name(rows, data['hospital_id'])} {data['department']} "
            f"({data['urgency']}{green}): {data['reason']}",
            referral_id=ev.aggregate_id,
            contract_id=data["contract_id"],
            hospital_id=data["hospital_id"],
        )

    @handles(Referral, "ReturnStarted")
    def return_started(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        self._referral_ref(ev, rows)
        self._entry(
            ev,
            rows,
            data["patient_id"],
            "return.started",
            f"{self._name(rows, data['hospital_id'])} {data['department']} returned the patient to "
            f"{self._name(rows, data['center_id'])}; follow-up due {data['follow_up_due']}",
            referral_id=ev.aggregate_id,
            hospital_id=data["hospital_id"],
        )

    def _referral_step(self, ev: Ev, rows: Rows, kind: str, summary: Callable[[str], str]) -> None:
        """An entry for a later step of a referral; ``summary`` is given the hospital's name."""
        ref = self._ref_of(rows, ev.aggregate_id)
        self._entry(
            ev,
            rows,
            ref.get("patient_id"),
            kind,
            summary(self._name(rows, ref.get("hospital_id"))),
            referral_id=ev.aggregate_id,
            hospital_id=ref.get("hospital_id"),
        )

    @handles(Referral, "Accepted")
    def accepted(self, ev: Ev, rows: Rows) -> None:
        self._referral_step(
            ev, rows, "referral.accepted", lambda hospital: f"{hospital} accepted the referral"
        )

    @handles(Referral, "Rejected")
    def rejected(self, ev: Ev, rows: Rows) -> None:
        reason = ev.data.get("reason_code")
        self._referral_step(
            ev,
            rows,
            "referral.rejected",
            lambda hospital: f"{hospital} rejected the referral ({reason})",
        )

    @handles(Referral, "Cancelled")
    def cancelled(self, ev: Ev, rows: Rows) -> None:
        reason = ev.data.get("reason")
        self._referral_step(
            ev, rows, "referral.cancelled", lambda _: f"Referral cancelled: {reason}"
        )

    @handles(Referral, "PatientArrived")
    def arrived(self, ev: Ev, rows: Rows) -> None:
        self._referral_step(ev, rows, "referral.arrived", lambda hospital: f"Arrived at {hospital}")

    @handles(Referral, "PatientAdmitted")
    def admitted(self, ev: Ev, rows: Rows) -> None:
        ward = ev.data.get("ward")
        self._referral_step(
            ev, rows, "referral.admitted", lambda hospital: f"Admitted to {hospital}, ward {ward}"
        )

    @handles(Referral, "ReturnedToCommunity")
    def returned(self, ev: Ev, rows: Rows) -> None:
        due = ev.data.get("follow_up_due")
        self._referral_step(
            ev,
            rows,
            "return.returned",
            lambda hospital: (
                f"{hospital} returned the patient to the community; follow-up due {due}"
            ),
        )

    @handles(Referral, "ReturnAcknowledged")
    def return_acknowledged(self, ev: Ev, rows: Rows) -> None:
        self._referral_step(
            ev, rows, "return.acknowledged", lambda _: "Return to community acknowledged"
        )

    # --- bookings -----------------------------------------------------------------------

    @handles(Quota, "Booked")
    def booked(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        quota = self._ref_of(rows, ev.aggregate_id)
        self._put_ref(
            rows,
            data["booking_id"],
            "booking",
            patient_id=data["patient_id"],
            hospital_id=quota.get("hospital_id"),
            extra=data.get("referral_id"),
        )
        self._entry(
            ev,
            rows,
            data["patient_id"],
            "booking.booked",
            f"Booked {quota.get('name', 'a reserved slot')}",
            booking_id=data["booking_id"],
            referral_id=data.get("referral_id"),
            hospital_id=quota.get("hospital_id"),
        )

    def _booking_step(self, ev: Ev, rows: Rows, kind: str, summary: Callable[[str], str]) -> None:
        """An entry for a later step of a booking; ``summary`` is given the slot's label."""
        booking_id = ev.data["booking_id"]
        ref = self._ref_of(rows, booking_id)
        label = self._ref_of(rows, ev.aggregate_id).get("name", "the slot")
        self._entry(
            ev,
            rows,
            ref.get("patient_id"),
            kind,
            summary(label),
            booking_id=booking_id,
            referral_id=ref.get("extra"),
            hospital_id=ref.get("hospital_id"),
        )

    @handles(Quota, "BookingCancelled")
    def booking_cancelled(self, ev: Ev, rows: Rows) -> None:
        reason = ev.data.get("reason")
        self._booking_step(ev, rows, "booking.cancelled", lambda _: f"Booking cancelled: {reason}")

    @handles(Quota, "Attended")
    def attended(self, ev: Ev, rows: Rows) -> None:
        self._booking_step(ev, rows, "booking.attended", lambda label: f"Attended {label}")

    @handles(Quota, "NoShow")
    def no_show(self, ev: Ev, rows: Rows) -> None:
        self._booking_step(ev, rows, "booking.no_show", lambda label: f"Did not attend {label}")

    # --- follow-ups ---------------------------------------------------------------------

    @handles(FollowUps, "Scheduled")
    def scheduled(self, ev: Ev, rows: Rows) -> None:
        obligations = ev.data["obligations"]
        reasons = sorted({o["reason"] for o in obligations})
        first = min(o["due"] for o in obligations)
        self._entry(
            ev,
            rows,
            self._ref_of(rows, ev.aggregate_id).get("patient_id"),
            "follow_up.scheduled",
            f"{len(obligations)} follow-up(s) scheduled ({', '.join(reasons)}), first due {first}",
        )

    @handles(FollowUps, "Withdrawn")
    def withdrawn(self, ev: Ev, rows: Rows) -> None:
        n = len(ev.data["obligation_ids"])
        self._entry(
            ev,
            rows,
            self._ref_of(rows, ev.aggregate_id).get("patient_id"),
            "follow_up.withdrawn",
            f"{n} follow-up(s) withdrawn: {ev.data['reason']}",
        )

    @handles(FollowUps, "VisitRecorded")
    def visit(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        met = " (fulfils a scheduled follow-up)" if data.get("obligation_ids") else ""
        self._entry(
            ev,
            rows,
            self._ref_of(rows, ev.aggregate_id).get("patient_id"),
            "follow_up.visit",
            f"{data['kind'].replace('_', ' ')} follow-up on {data['visited_on']}{met}",
        )

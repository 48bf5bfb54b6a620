"""Patient timeline: every event about a patient, across organisations, in the order it happened.

Each entry: when it happened (``at``), when it was recorded, kind (``category.step``), acting
organisation and person, a one-line summary, and links (contract, referral, booking). The
projection keeps a small table of references (org and team names, which patient a contract,
referral, booking or follow-up stream belongs to) so later events find their patient.
"""

from __future__ import annotations

from typing import Any, ClassVar

from projections.base import Projection, Row, Rows
from projections.events import Ev
from projections.store import Table

TXT, INT = "text", "int"

#: Entry categories a reader may filter by (a kind is ``category.step``).
CATEGORIES = ("registry", "contract", "team", "referral", "return", "booking", "follow_up")


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
    handles: ClassVar[dict[str, str]] = {
        "Organisation.Registered": "org",
        "CareTeam.Formed": "team",
        "Patient.Registered": "patient_registered",
        "Patient.Tagged": "tagged",
        "Patient.Untagged": "untagged",
        "Patient.MovedAway": "moved_away",
        "Patient.Transferred": "transferred",
        "Contract.Signed": "signed",
        "Contract.Renewed": "renewed",
        "Contract.Terminated": "terminated",
        "Contract.Expired": "expired",
        "Contract.TeamChanged": "team_changed",
        "Referral.Requested": "requested",
        "Referral.ReturnStarted": "return_started",
        "Referral.Accepted": "referral_step",
        "Referral.Rejected": "referral_step",
        "Referral.Cancelled": "referral_step",
        "Referral.PatientArrived": "referral_step",
        "Referral.PatientAdmitted": "referral_step",
        "Referral.ReturnedToCommunity": "referral_step",
        "Referral.ReturnAcknowledged": "referral_step",
        "Quota.Published": "quota",
        "Quota.Booked": "booked",
        "Quota.BookingCancelled": "booking_step",
        "Quota.Attended": "booking_step",
        "Quota.NoShow": "booking_step",
        "FollowUps.Opened": "followups_opened",
        "FollowUps.Scheduled": "scheduled",
        "FollowUps.Withdrawn": "withdrawn",
        "FollowUps.VisitRecorded": "visit",
    }

    # --- helpers ------------------------------------------------------------------------

    def _ref(self, rows: Rows, id: str, kind: str, **values: Any) -> None:
        rows.put("v_timeline_refs", {"id": id, "kind": kind, **values})

    def _referral_ref(self, ev: Ev, rows: Rows) -> None:
        """What later steps of a referral (requested up, or a return started) look up."""
        d = ev.d
        self._ref(
            rows,
            ev.oid,
            "referral",
            patient_id=d["patient_id"],
            center_id=d["center_id"],
            hospital_id=d["hospital_id"],
            name=d["department"],
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

    def _of(self, rows: Rows, id: str) -> Row:
        return rows.get("v_timeline_refs", id) or {}

    # --- reference data -----------------------------------------------------------------

    def org(self, ev: Ev, rows: Rows) -> None:
        self._ref(rows, ev.oid, "org", name=ev.d["name"], extra=ev.d["kind"])

    def team(self, ev: Ev, rows: Rows) -> None:
        self._ref(rows, ev.oid, "team", name=ev.d["name"], center_id=ev.d["center_id"])

    def quota(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        label = d.get("expert") or d.get("ward") or d["kind"]
        hospital = self._name(rows, d["hospital_id"])
        self._ref(
            rows,
            ev.oid,
            "quota",
            hospital_id=d["hospital_id"],
            name=f"{label} at {hospital} {d['department']} on {d['session_date']}",
        )

    def followups_opened(self, ev: Ev, rows: Rows) -> None:
        self._ref(
            rows, ev.oid, "followups", patient_id=ev.d["patient_id"], center_id=ev.d["center_id"]
        )

    # --- registry -----------------------------------------------------------------------

    def _patient_at_center(self, ev: Ev, rows: Rows, kind: str, summary: str) -> None:
        """The patient now belongs to ``center_id`` of the event (registered or moved)."""
        center = ev.d["center_id"]
        self._ref(
            rows, ev.oid, "patient", patient_id=ev.oid, center_id=center, name=ev.d["district"]
        )
        self._entry(ev, rows, ev.oid, kind, f"{summary} {self._name(rows, center)}")

    def patient_registered(self, ev: Ev, rows: Rows) -> None:
        self._patient_at_center(ev, rows, "registry.registered", "Registered at")

    def tagged(self, ev: Ev, rows: Rows) -> None:
        self._entry(ev, rows, ev.oid, "registry.tagged", f"Key population recorded: {ev.d['tag']}")

    def untagged(self, ev: Ev, rows: Rows) -> None:
        self._entry(ev, rows, ev.oid, "registry.untagged", f"Key population removed: {ev.d['tag']}")

    def moved_away(self, ev: Ev, rows: Rows) -> None:
        self._entry(ev, rows, ev.oid, "registry.moved_away", f"Moved away to {ev.d['destination']}")

    def transferred(self, ev: Ev, rows: Rows) -> None:
        self._patient_at_center(ev, rows, "registry.transferred", "Care moved to")

    # --- contracts ----------------------------------------------------------------------

    def signed(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        self._ref(rows, ev.oid, "contract", patient_id=d["patient_id"], center_id=d["center_id"])
        team = self._name(rows, d["team_id"])
        self._entry(
            ev,
            rows,
            d["patient_id"],
            "contract.signed",
            f"Signed a {d['package']} contract with {team} ({d['start']} to {d['end']})",
            contract_id=ev.oid,
        )

    def _contract(self, ev: Ev, rows: Rows, kind: str, summary: str) -> None:
        self._entry(
            ev, rows, self._of(rows, ev.oid).get("patient_id"), kind, summary, contract_id=ev.oid
        )

    def renewed(self, ev: Ev, rows: Rows) -> None:
        years = ev.d["years"]
        self._contract(
            ev,
            rows,
            "contract.renewed",
            f"Contract renewed for {years} year(s), until {ev.d['end']}",
        )

    def terminated(self, ev: Ev, rows: Rows) -> None:
        self._contract(ev, rows, "contract.terminated", f"Contract terminated: {ev.d['reason']}")

    def expired(self, ev: Ev, rows: Rows) -> None:
        self._contract(ev, rows, "contract.expired", f"Contract expired on {ev.d['on']}")

    def team_changed(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        old, new = self._name(rows, d["previous_team_id"]), self._name(rows, d["team_id"])
        self._contract(ev, rows, "team.changed", f"Team changed from {old} to {new}: {d['reason']}")

    # --- referrals ----------------------------------------------------------------------

    def requested(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        self._referral_ref(ev, rows)
        green = ", green channel" if d["green_channel"] else ""
        self._entry(
            ev,
            rows,
            d["patient_id"],
            "referral.requested",
            f"Referred to {self._name(rows, d['hospital_id'])} {d['department']} "
            f"({d['urgency']}{green}): {d['reason']}",
            referral_id=ev.oid,
            contract_id=d["contract_id"],
            hospital_id=d["hospital_id"],
        )

    def return_started(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        self._referral_ref(ev, rows)
        self._entry(
            ev,
            rows,
            d["patient_id"],
            "return.started",
            f"{self._name(rows, d['hospital_id'])} {d['department']} returned the patient to "
            f"{self._name(rows, d['center_id'])}; follow-up due {d['follow_up_due']}",
            referral_id=ev.oid,
            hospital_id=d["hospital_id"],
        )

    def referral_step(self, ev: Ev, rows: Rows) -> None:
        ref = self._of(rows, ev.oid)
        hospital = self._name(rows, ref.get("hospital_id"))
        d, step = ev.d, ev.name.split(".", 1)[1]
        kind, summary = {
            "Accepted": ("referral.accepted", f"{hospital} accepted the referral"),
            "Rejected": (
                "referral.rejected",
                f"{hospital} rejected the referral ({d.get('reason_code')})",
            ),
            "Cancelled": ("referral.cancelled", f"Referral cancelled: {d.get('reason')}"),
            "PatientArrived": ("referral.arrived", f"Arrived at {hospital}"),
            "PatientAdmitted": (
                "referral.admitted",
                f"Admitted to {hospital}, ward {d.get('ward')}",
            ),
            "ReturnedToCommunity": (
                "return.returned",
                f"{hospital} returned the patient to the community; follow-up due "
                f"{d.get('follow_up_due')}",
            ),
            "ReturnAcknowledged": ("return.acknowledged", "Return to community acknowledged"),
        }[step]
        self._entry(
            ev,
            rows,
            ref.get("patient_id"),
            kind,
            summary,
            referral_id=ev.oid,
            hospital_id=ref.get("hospital_id"),
        )

    # --- bookings -----------------------------------------------------------------------

    def booked(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        quota = self._of(rows, ev.oid)
        self._ref(
            rows,
            d["booking_id"],
            "booking",
            patient_id=d["patient_id"],
            hospital_id=quota.get("hospital_id"),
            extra=d.get("referral_id"),
        )
        self._entry(
            ev,
            rows,
            d["patient_id"],
            "booking.booked",
            f"Booked {quota.get('name', 'a reserved slot')}",
            booking_id=d["booking_id"],
            referral_id=d.get("referral_id"),
            hospital_id=quota.get("hospital_id"),
        )

    def booking_step(self, ev: Ev, rows: Rows) -> None:
        booking_id = ev.d["booking_id"]
        ref = self._of(rows, booking_id)
        label = self._of(rows, ev.oid).get("name", "the slot")
        kind, summary = {
            "Quota.BookingCancelled": (
                "booking.cancelled",
                f"Booking cancelled: {ev.d.get('reason')}",
            ),
            "Quota.Attended": ("booking.attended", f"Attended {label}"),
            "Quota.NoShow": ("booking.no_show", f"Did not attend {label}"),
        }[ev.name]
        self._entry(
            ev,
            rows,
            ref.get("patient_id"),
            kind,
            summary,
            booking_id=booking_id,
            referral_id=ref.get("extra"),
            hospital_id=ref.get("hospital_id"),
        )

    # --- follow-ups ---------------------------------------------------------------------

    def scheduled(self, ev: Ev, rows: Rows) -> None:
        obligations = ev.d["obligations"]
        reasons = sorted({o["reason"] for o in obligations})
        first = min(o["due"] for o in obligations)
        self._entry(
            ev,
            rows,
            self._of(rows, ev.oid).get("patient_id"),
            "follow_up.scheduled",
            f"{len(obligations)} follow-up(s) scheduled ({', '.join(reasons)}), first due {first}",
        )

    def withdrawn(self, ev: Ev, rows: Rows) -> None:
        n = len(ev.d["obligation_ids"])
        self._entry(
            ev,
            rows,
            self._of(rows, ev.oid).get("patient_id"),
            "follow_up.withdrawn",
            f"{n} follow-up(s) withdrawn: {ev.d['reason']}",
        )

    def visit(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        met = " (fulfils a scheduled follow-up)" if d.get("obligation_id") else ""
        self._entry(
            ev,
            rows,
            self._of(rows, ev.oid).get("patient_id"),
            "follow_up.visit",
            f"{d['kind'].replace('_', ' ')} follow-up on {d['on']}{met}",
        )

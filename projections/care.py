"""Care view: contracts, referrals, follow-up obligations and visits, quotas and bookings.

One fold serves three read models, each a set of queries over these rows (see
``projections/views.py``): team workloads, worklists, and KPIs (formulas in
``projections/kpis.py``). Counts that depend on "today" are computed when read, from the state
kept here, so the rows never go stale as days pass.
"""

from __future__ import annotations

from typing import ClassVar

from projections.base import Projection, Rows
from projections.events import Ev
from projections.store import Table

TXT, INT = "text", "int"


def _t(name: str, cols: str, pk: tuple[str, ...], *indexes: tuple[str, ...]) -> Table:
    """A table from ``"col col:int ..."`` (text unless marked ``:int``)."""
    columns = tuple((c.split(":")[0], INT if c.endswith(":int") else TXT) for c in cols.split())
    return Table(name, columns, pk, indexes)


class CareProjection(Projection):
    name = "care"
    tables: ClassVar[tuple[Table, ...]] = (
        _t("v_care_patients", "id center_id birth_date tags team_id contract_id", ("id",)),
        _t("v_care_followups", "id patient_id center_id", ("id",)),
        _t(
            "v_contracts",
            "id patient_id team_id center_id package start_date end_date status signed_at "
            "signed_by ended_on",
            ("id",),
            ("team_id",),
            ("center_id",),
        ),
        _t(
            "v_referrals",
            "id patient_id direction center_id team_id hospital_id department urgency "
            "green_channel:int status requested_at requested_by decided_at decision "
            "returned_at acknowledged_at follow_up_due followed_up_on",
            ("id",),
            ("hospital_id", "status"),
            ("center_id", "status"),
            ("team_id",),
        ),
        _t(
            "v_obligations",
            "id patient_id center_id reason source_id window_start due status done_on done_by",
            ("id",),
            ("center_id", "status", "due"),
            ("patient_id",),
        ),
        _t(
            "v_visits",
            "id patient_id center_id team_id staff_id on_date kind obligation_id",
            ("id",),
            ("team_id", "on_date"),
        ),
        _t(
            "v_quotas",
            "id hospital_id kind department expert ward session_date end_date half_day "
            "slots:int booked:int reserved_center reserved_district release_at released:int",
            ("id",),
            ("hospital_id",),
        ),
        _t(
            "v_bookings",
            "id quota_id patient_id referral_id team_id center_id staff_id hospital_id "
            "session_date booked_at status",
            ("id",),
            ("team_id", "session_date"),
            ("center_id", "session_date"),
        ),
    )
    handles: ClassVar[dict[str, str]] = {
        "Patient.Registered": "patient_registered",
        "Patient.Tagged": "tags_changed",
        "Patient.Untagged": "tags_changed",
        "Patient.Transferred": "patient_transferred",
        "FollowUps.Transferred": "followups_transferred",
        "FollowUps.Opened": "followups_opened",
        "FollowUps.Scheduled": "scheduled",
        "FollowUps.Withdrawn": "withdrawn",
        "FollowUps.VisitRecorded": "visit",
        "Contract.Signed": "signed",
        "Contract.Renewed": "renewed",
        "Contract.Terminated": "ended",
        "Contract.Expired": "ended",
        "Contract.TeamChanged": "team_changed",
        "Referral.Requested": "referral_opened",
        "Referral.ReturnStarted": "referral_opened",
        "Referral.Accepted": "decided",
        "Referral.Rejected": "decided",
        "Referral.Cancelled": "referral_status",
        "Referral.PatientArrived": "referral_status",
        "Referral.PatientAdmitted": "referral_status",
        "Referral.ReturnedToCommunity": "returned",
        "Referral.ReturnAcknowledged": "acknowledged",
        "Referral.FollowedUp": "followed_up",
        "Quota.Published": "published",
        "Quota.Booked": "booked",
        "Quota.BookingCancelled": "booking_cancelled",
        "Quota.Attended": "attendance",
        "Quota.NoShow": "attendance",
        "Quota.Released": "released",
    }

    # --- patients and their follow-up streams -------------------------------------------

    def patient_registered(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_care_patients",
            {
                "id": ev.oid,
                "center_id": d["center_id"],
                "birth_date": d["birth_date"],
                "tags": "",
                "team_id": None,
                "contract_id": None,
            },
        )

    def tags_changed(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_care_patients", ev.oid)
        if row is None:
            return
        tags = set(row["tags"].split(",")) if row["tags"] else set()
        if ev.name == "Patient.Tagged":
            tags.add(ev.d["tag"])
        else:
            tags.discard(ev.d["tag"])
        row["tags"] = ",".join(sorted(tags))
        rows.put("v_care_patients", row)

    def patient_transferred(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_care_patients", ev.oid)
        if row is not None:
            rows.put("v_care_patients", {**row, "center_id": ev.d["center_id"]})

    def followups_transferred(self, ev: Ev, rows: Rows) -> None:
        center = ev.d["center_id"]
        stream = rows.get("v_care_followups", ev.oid)
        if stream is not None:
            rows.put("v_care_followups", {**stream, "center_id": center})
        for oid in ev.d["obligation_ids"]:
            row = rows.get("v_obligations", oid)
            if row is not None:
                rows.put("v_obligations", {**row, "center_id": center})

    def followups_opened(self, ev: Ev, rows: Rows) -> None:
        rows.put(
            "v_care_followups",
            {"id": ev.oid, "patient_id": ev.d["patient_id"], "center_id": ev.d["center_id"]},
        )

    def scheduled(self, ev: Ev, rows: Rows) -> None:
        stream = rows.get("v_care_followups", ev.oid) or {}
        for o in ev.d["obligations"]:
            rows.put(
                "v_obligations",
                {
                    "id": o["id"],
                    "patient_id": stream.get("patient_id"),
                    "center_id": stream.get("center_id"),
                    "reason": o["reason"],
                    "source_id": o["source_id"],
                    "window_start": o["window_start"],
                    "due": o["due"],
                    "status": "open",
                    "done_on": None,
                    "done_by": None,
                },
            )

    def withdrawn(self, ev: Ev, rows: Rows) -> None:
        for oid in ev.d["obligation_ids"]:
            row = rows.get("v_obligations", oid)
            if row is not None:
                row["status"] = "withdrawn"
                rows.put("v_obligations", row)

    def visit(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        stream = rows.get("v_care_followups", ev.oid) or {}
        patient = rows.get("v_care_patients", stream.get("patient_id")) or {}
        rows.put(
            "v_visits",
            {
                "id": d["visit_id"],
                "patient_id": stream.get("patient_id"),
                "center_id": stream.get("center_id"),
                "team_id": patient.get("team_id"),
                "staff_id": ev.staff,
                "on_date": d["on"],
                "kind": d["kind"],
                "obligation_id": d.get("obligation_id"),
            },
        )
        if d.get("obligation_id"):
            row = rows.get("v_obligations", d["obligation_id"])
            if row is not None:
                row.update(status="done", done_on=d["on"], done_by=ev.staff)
                rows.put("v_obligations", row)

    # --- contracts ----------------------------------------------------------------------

    def signed(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_contracts",
            {
                "id": ev.oid,
                "patient_id": d["patient_id"],
                "team_id": d["team_id"],
                "center_id": d["center_id"],
                "package": d["package"],
                "start_date": d["start"],
                "end_date": d["end"],
                "status": "active",
                "signed_at": ev.at,
                "signed_by": ev.staff,
                "ended_on": None,
            },
        )
        patient = rows.get("v_care_patients", d["patient_id"])
        if patient is not None:
            patient.update(team_id=d["team_id"], contract_id=ev.oid)
            rows.put("v_care_patients", patient)

    def renewed(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_contracts", ev.oid)
        if row is not None:
            row["end_date"] = ev.d["end"]
            rows.put("v_contracts", row)

    def ended(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_contracts", ev.oid)
        if row is None:
            return
        terminated = ev.name == "Contract.Terminated"
        row.update(
            status="terminated" if terminated else "expired",
            ended_on=ev.at_day if terminated else ev.d["on"],
        )
        rows.put("v_contracts", row)

    def team_changed(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_contracts", ev.oid)
        if row is None:
            return
        row.update(team_id=ev.d["team_id"], center_id=ev.d["center_id"])
        rows.put("v_contracts", row)
        patient = rows.get("v_care_patients", row["patient_id"])
        if patient is not None and patient["contract_id"] == ev.oid:
            patient["team_id"] = ev.d["team_id"]
            rows.put("v_care_patients", patient)

    # --- referrals ----------------------------------------------------------------------

    def referral_opened(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        up = d["direction"] == "up"
        team = d.get("team_id")
        if team is None:
            team = (rows.get("v_care_patients", d["patient_id"]) or {}).get("team_id")
        rows.put(
            "v_referrals",
            {
                "id": ev.oid,
                "patient_id": d["patient_id"],
                "direction": d["direction"],
                "center_id": d["center_id"],
                "team_id": team,
                "hospital_id": d["hospital_id"],
                "department": d["department"],
                "urgency": d["urgency"],
                "green_channel": 1 if d["green_channel"] else 0,
                "status": "requested" if up else "returned",
                "requested_at": ev.at if up else None,
                "requested_by": ev.staff if up else None,
                "decided_at": None,
                "decision": None,
                "returned_at": None if up else ev.at,
                "acknowledged_at": None,
                "follow_up_due": d["follow_up_due"],
                "followed_up_on": None,
            },
        )

    def _referral(self, ev: Ev, rows: Rows, **changes: object) -> None:
        row = rows.get("v_referrals", ev.oid)
        if row is not None:
            row.update(changes)
            rows.put("v_referrals", row)

    def decided(self, ev: Ev, rows: Rows) -> None:
        status = "accepted" if ev.name == "Referral.Accepted" else "rejected"
        self._referral(ev, rows, status=status, decision=status, decided_at=ev.at)

    def referral_status(self, ev: Ev, rows: Rows) -> None:
        status = {
            "Referral.Cancelled": "cancelled",
            "Referral.PatientArrived": "arrived",
            "Referral.PatientAdmitted": "admitted",
        }[ev.name]
        self._referral(ev, rows, status=status)

    def returned(self, ev: Ev, rows: Rows) -> None:
        # the return opens a loop of its own: its follow-up is still to come
        self._referral(
            ev,
            rows,
            status="returned",
            returned_at=ev.at,
            follow_up_due=ev.d["follow_up_due"],
            followed_up_on=None,
        )

    def acknowledged(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="acknowledged", acknowledged_at=ev.at)

    def followed_up(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, followed_up_on=ev.d["on"])

    # --- quotas and bookings ------------------------------------------------------------

    def published(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_quotas",
            {
                "id": ev.oid,
                "hospital_id": d["hospital_id"],
                "kind": d["kind"],
                "department": d["department"],
                "expert": d.get("expert"),
                "ward": d.get("ward"),
                "session_date": d["session_date"],
                "end_date": d["end_date"],
                "half_day": d.get("half_day"),
                "slots": d["slots"],
                "booked": 0,
                "reserved_center": d.get("reserved_for_center"),
                "reserved_district": d.get("reserved_for_district"),
                "release_at": d["release_at"],
                "released": 0,
            },
        )

    def _quota_booked(self, rows: Rows, quota_id: str, delta: int) -> dict[str, object]:
        quota = rows.get("v_quotas", quota_id)
        if quota is None:
            return {}
        quota["booked"] += delta
        rows.put("v_quotas", quota)
        return quota

    def booked(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        quota = self._quota_booked(rows, ev.oid, 1)
        rows.put(
            "v_bookings",
            {
                "id": d["booking_id"],
                "quota_id": ev.oid,
                "patient_id": d["patient_id"],
                "referral_id": d.get("referral_id"),
                "team_id": d.get("team_id"),
                "center_id": ev.org,
                "staff_id": ev.staff,
                "hospital_id": quota.get("hospital_id"),
                "session_date": quota.get("session_date"),
                "booked_at": ev.at,
                "status": "booked",
            },
        )

    def booking_cancelled(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_bookings", ev.d["booking_id"])
        if row is not None:
            row["status"] = "cancelled"
            rows.put("v_bookings", row)
            self._quota_booked(rows, ev.oid, -1)

    def attendance(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_bookings", ev.d["booking_id"])
        if row is not None:
            row["status"] = "attended" if ev.name == "Quota.Attended" else "no_show"
            rows.put("v_bookings", row)

    def released(self, ev: Ev, rows: Rows) -> None:
        quota = rows.get("v_quotas", ev.oid)
        if quota is not None:
            quota["released"] = 1
            rows.put("v_quotas", quota)

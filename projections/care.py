"""Care view: contracts, referrals, follow-up obligations and visits, quotas and bookings.

One fold serves three read models, each a set of queries over these rows (see
``projections/views.py``): team workloads, worklists, and KPIs (formulas in
``projections/kpis.py``). Counts that depend on "today" are computed when read, from the state
kept here, so the rows never go stale as days pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from domain.contracts import Contract
from domain.followups import FollowUps
from domain.patients import Patient
from domain.quotas import Quota
from domain.referrals import Referral
from projections.base import Projection, Rows, handles
from projections.events import Ev
from projections.store import Table

TXT, INT = "text", "int"


def born(data: dict[str, Any]) -> str | None:
    """The first day of the birth month (``YYYY-MM-01``), what the KPIs' age bands count by:
    the event's plain ``birth_month``, or the birth date of an event stored before it existed
    (stored in plain text then)."""
    month = data.get("birth_month")
    if month is None:
        birth = data.get("birth_date")
        month = birth[:7] if isinstance(birth, str) and birth[:4].isdigit() else None
    return None if month is None else f"{month}-01"


#: The transfer form's fields (转出单) kept in ``v_referrals.transfer_form`` (JSON; its texts as
#: stored: personal data sealed, opened only for a reader by the queries).
TRANSFER_FORM = (
    "diagnoses",
    "reason",
    "past_history",
    "treatment",
    "referring_doctor",
    "doctor_phone",
)
#: The return form's fields (回转单) kept in ``v_referrals.return_form`` (JSON, likewise).
RETURN_FORM = (
    "diagnoses",
    "inpatient_number",
    "key_results",
    "summary",
    "prescriptions",
    "next_plan",
    "rehabilitation",
)


def form_json(found: dict[str, Any], names: tuple[str, ...]) -> str:
    """The form's fields of ``found`` (an event's data or a return plan) as the view's JSON;
    fields an event recorded before the form lacks read empty."""
    empty: dict[str, Any] = {"diagnoses": [], "prescriptions": []}
    return json.dumps({n: found.get(n, empty.get(n, "")) for n in names}, ensure_ascii=False)


def table(name: str, cols: str, pk: tuple[str, ...], *indexes: tuple[str, ...]) -> Table:
    """A table from ``"col col:int ..."`` (text unless marked ``:int``)."""
    columns = tuple((c.split(":")[0], INT if c.endswith(":int") else TXT) for c in cols.split())
    return Table(name, columns, pk, indexes)


class CareProjection(Projection):
    name = "care"
    tables: ClassVar[tuple[Table, ...]] = (
        table("v_care_patients", "id center_id born tags team_id contract_id", ("id",)),
        table("v_care_followups", "id patient_id center_id", ("id",)),
        table(
            "v_contracts",
            "id patient_id team_id center_id package start_date end_date status signed_at "
            "signed_by ended_on",
            ("id",),
            ("team_id",),
            ("center_id",),
        ),
        table(
            "v_referrals",
            "id patient_id direction center_id team_id hospital_id department urgency "
            "green_channel:int status requested_at requested_by decided_at decision "
            "returned_at acknowledged_at follow_up_due followed_up_on "
            "decision_due cancelled_at transfer_form return_form",
            ("id",),
            ("hospital_id", "status"),
            ("center_id", "status"),
            ("team_id",),
        ),
        table(
            "v_obligations",
            "id patient_id center_id reason source_id window_start due status done_on done_by "
            "face_to_face:int risk_assessment:int",
            ("id",),
            ("center_id", "status", "due"),
            ("patient_id",),
        ),
        table(
            "v_visits",
            "id patient_id center_id team_id staff_id on_date kind obligation_id",
            ("id",),
            ("team_id", "on_date"),
        ),
        table(
            "v_quotas",
            "id hospital_id kind department expert ward session_date end_date half_day "
            "slots:int booked:int reserved_center reserved_district release_at released:int",
            ("id",),
            ("hospital_id",),
        ),
        table(
            "v_bookings",
            "id quota_id patient_id referral_id team_id center_id staff_id hospital_id "
            "session_date booked_at status",
            ("id",),
            ("team_id", "session_date"),
            ("center_id", "session_date"),
        ),
    )

    # --- patients and their follow-up streams -------------------------------------------

    @handles(Patient, "Registered")
    def patient_registered(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_care_patients",
            {
                "id": ev.aggregate_id,
                "center_id": data["center_id"],
                "born": born(data),
                "tags": "",
                "team_id": None,
                "contract_id": None,
            },
        )

    @handles(Patient, "Tagged")
    def tagged(self, ev: Ev, rows: Rows) -> None:
        self._tags_changed(ev, rows, lambda tags: tags | {ev.data["tag"]})

    @handles(Patient, "Untagged")
    def untagged(self, ev: Ev, rows: Rows) -> None:
        self._tags_changed(ev, rows, lambda tags: tags - {ev.data["tag"]})

    def _tags_changed(self, ev: Ev, rows: Rows, change: Callable[[set[str]], set[str]]) -> None:
        row = rows.get("v_care_patients", ev.aggregate_id)
        if row is None:
            return
        tags = set(row["tags"].split(",")) if row["tags"] else set()
        row["tags"] = ",".join(sorted(change(tags)))
        rows.put("v_care_patients", row)

    @handles(Patient, "Transferred")
    def patient_transferred(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_care_patients", ev.aggregate_id)
        if row is not None:
            rows.put("v_care_patients", {**row, "center_id": ev.data["center_id"]})

    @handles(FollowUps, "Transferred")
    def followups_transferred(self, ev: Ev, rows: Rows) -> None:
        center = ev.data["center_id"]
        stream = rows.get("v_care_followups", ev.aggregate_id)
        if stream is not None:
            rows.put("v_care_followups", {**stream, "center_id": center})
        for oid in ev.data["obligation_ids"]:
            row = rows.get("v_obligations", oid)
            if row is not None:
                rows.put("v_obligations", {**row, "center_id": center})

    @handles(FollowUps, "Opened")
    def followups_opened(self, ev: Ev, rows: Rows) -> None:
        rows.put(
            "v_care_followups",
            {
                "id": ev.aggregate_id,
                "patient_id": ev.data["patient_id"],
                "center_id": ev.data["center_id"],
            },
        )

    @handles(FollowUps, "Scheduled")
    def scheduled(self, ev: Ev, rows: Rows) -> None:
        stream = rows.get("v_care_followups", ev.aggregate_id) or {}
        for o in ev.data["obligations"]:
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
                    "face_to_face": 1 if o.get("face_to_face") else 0,
                    "risk_assessment": 1 if o.get("risk_assessment") else 0,
                },
            )

    @handles(FollowUps, "Withdrawn")
    def withdrawn(self, ev: Ev, rows: Rows) -> None:
        for oid in ev.data["obligation_ids"]:
            row = rows.get("v_obligations", oid)
            if row is not None:
                row["status"] = "withdrawn"
                rows.put("v_obligations", row)

    @handles(FollowUps, "VisitRecorded")
    def visit(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        stream = rows.get("v_care_followups", ev.aggregate_id) or {}
        patient = rows.get("v_care_patients", stream.get("patient_id")) or {}
        rows.put(
            "v_visits",
            {
                "id": data["visit_id"],
                "patient_id": stream.get("patient_id"),
                "center_id": stream.get("center_id"),
                "team_id": patient.get("team_id"),
                "staff_id": ev.staff,
                "on_date": data["visited_on"],
                "kind": data["kind"],
                # the first obligation it met (the one chosen); all are marked done below
                "obligation_id": (data.get("obligation_ids") or [None])[0],
            },
        )
        for oid in data.get("obligation_ids") or ():
            row = rows.get("v_obligations", oid)
            if row is not None:
                row.update(status="done", done_on=data["visited_on"], done_by=ev.staff)
                rows.put("v_obligations", row)

    # --- contracts ----------------------------------------------------------------------

    @handles(Contract, "Signed")
    def signed(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_contracts",
            {
                "id": ev.aggregate_id,
                "patient_id": data["patient_id"],
                "team_id": data["team_id"],
                "center_id": data["center_id"],
                "package": data["package"],
                "start_date": data["start"],
                "end_date": data["end"],
                "status": "active",
                "signed_at": ev.at,
                "signed_by": ev.staff,
                "ended_on": None,
            },
        )
        patient = rows.get("v_care_patients", data["patient_id"])
        if patient is not None:
            patient.update(team_id=data["team_id"], contract_id=ev.aggregate_id)
            rows.put("v_care_patients", patient)

    @handles(Contract, "Renewed")
    def renewed(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_contracts", ev.aggregate_id)
        if row is not None:
            row["end_date"] = ev.data["end"]
            rows.put("v_contracts", row)

    @handles(Contract, "Terminated")
    def terminated(self, ev: Ev, rows: Rows) -> None:
        self._ended(ev, rows, status="terminated", ended_on=ev.at_day)

    @handles(Contract, "Expired")
    def expired(self, ev: Ev, rows: Rows) -> None:
        self._ended(ev, rows, status="expired", ended_on=ev.data["on"])

    def _ended(self, ev: Ev, rows: Rows, status: str, ended_on: str) -> None:
        row = rows.get("v_contracts", ev.aggregate_id)
        if row is not None:
            row.update(status=status, ended_on=ended_on)
            rows.put("v_contracts", row)

    @handles(Contract, "TeamChanged")
    def team_changed(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_contracts", ev.aggregate_id)
        if row is None:
            return
        row.update(team_id=ev.data["team_id"], center_id=ev.data["center_id"])
        rows.put("v_contracts", row)
        patient = rows.get("v_care_patients", row["patient_id"])
        if patient is not None and patient["contract_id"] == ev.aggregate_id:
            patient["team_id"] = ev.data["team_id"]
            rows.put("v_care_patients", patient)

    # --- referrals ----------------------------------------------------------------------

    @handles(Referral, "Requested", "ReturnStarted")
    def referral_opened(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        up = data["direction"] == "up"
        team = data.get("team_id")
        if team is None:
            team = (rows.get("v_care_patients", data["patient_id"]) or {}).get("team_id")
        rows.put(
            "v_referrals",
            {
                "id": ev.aggregate_id,
                "patient_id": data["patient_id"],
                "direction": data["direction"],
                "center_id": data["center_id"],
                "team_id": team,
                "hospital_id": data["hospital_id"],
                "department": data["department"],
                "urgency": data["urgency"],
                "green_channel": 1 if data["green_channel"] else 0,
                "status": "requested" if up else "returned",
                "requested_at": ev.at if up else None,
                "requested_by": ev.staff if up else None,
                "decided_at": None,
                "decision": None,
                "returned_at": None if up else ev.at,
                "acknowledged_at": None,
                "follow_up_due": data["follow_up_due"],
                "followed_up_on": None,
                "decision_due": data.get("decision_due"),
                "cancelled_at": None,
                "transfer_form": form_json(data, TRANSFER_FORM) if up else None,
                "return_form": None
                if up
                else form_json(data.get("return_plan") or {}, RETURN_FORM),
            },
        )

    def _referral(self, ev: Ev, rows: Rows, **changes: object) -> None:
        row = rows.get("v_referrals", ev.aggregate_id)
        if row is not None:
            row.update(changes)
            rows.put("v_referrals", row)

    @handles(Referral, "Accepted")
    def accepted(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="accepted", decision="accepted", decided_at=ev.at)

    @handles(Referral, "Rejected")
    def rejected(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="rejected", decision="rejected", decided_at=ev.at)

    @handles(Referral, "Cancelled")
    def cancelled(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="cancelled", cancelled_at=ev.at)

    @handles(Referral, "PatientArrived")
    def arrived(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="arrived")

    @handles(Referral, "PatientAdmitted")
    def admitted(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="admitted")

    @handles(Referral, "ReturnedToCommunity")
    def returned(self, ev: Ev, rows: Rows) -> None:
        # the return opens a loop of its own: its follow-up is still to come
        self._referral(
            ev,
            rows,
            status="returned",
            returned_at=ev.at,
            follow_up_due=ev.data["follow_up_due"],
            followed_up_on=None,
            return_form=form_json(ev.data, RETURN_FORM),
        )

    @handles(Referral, "ReturnAcknowledged")
    def acknowledged(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, status="acknowledged", acknowledged_at=ev.at)

    @handles(Referral, "FollowedUp")
    def followed_up(self, ev: Ev, rows: Rows) -> None:
        self._referral(ev, rows, followed_up_on=ev.data["on"])

    # --- quotas and bookings ------------------------------------------------------------

    @handles(Quota, "Published")
    def published(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_quotas",
            {
                "id": ev.aggregate_id,
                "hospital_id": data["hospital_id"],
                "kind": data["kind"],
                "department": data["department"],
                "expert": data.get("expert"),
                "ward": data.get("ward"),
                "session_date": data["session_date"],
                "end_date": data["end_date"],
                "half_day": data.get("half_day"),
                "slots": data["slots"],
                "booked": 0,
                "reserved_center": data.get("reserved_for_center"),
                "reserved_district": data.get("reserved_for_district"),
                "release_at": data["release_at"],
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

    @handles(Quota, "Booked")
    def booked(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        quota = self._quota_booked(rows, ev.aggregate_id, 1)
        rows.put(
            "v_bookings",
            {
                "id": data["booking_id"],
                "quota_id": ev.aggregate_id,
                "patient_id": data["patient_id"],
                "referral_id": data.get("referral_id"),
                "team_id": data.get("team_id"),
                "center_id": ev.org,
                "staff_id": ev.staff,
                "hospital_id": quota.get("hospital_id"),
                "session_date": quota.get("session_date"),
                "booked_at": ev.at,
                "status": "booked",
            },
        )

    @handles(Quota, "BookingCancelled")
    def booking_cancelled(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_bookings", ev.data["booking_id"])
        if row is not None:
            row["status"] = "cancelled"
            rows.put("v_bookings", row)
            self._quota_booked(rows, ev.aggregate_id, -1)

    @handles(Quota, "Attended")
    def attended(self, ev: Ev, rows: Rows) -> None:
        self._attendance(ev, rows, "attended")

    @handles(Quota, "NoShow")
    def no_show(self, ev: Ev, rows: Rows) -> None:
        self._attendance(ev, rows, "no_show")

    def _attendance(self, ev: Ev, rows: Rows, status: str) -> None:
        row = rows.get("v_bookings", ev.data["booking_id"])
        if row is not None:
            row["status"] = status
            rows.put("v_bookings", row)

    @handles(Quota, "Released")
    def released(self, ev: Ev, rows: Rows) -> None:
        quota = rows.get("v_quotas", ev.aggregate_id)
        if quota is not None:
            quota["released"] = 1
            rows.put("v_quotas", quota)

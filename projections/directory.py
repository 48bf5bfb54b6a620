"""Directory view: organisations, resident counts, teams and members, the patient registry."""

from __future__ import annotations

from typing import ClassVar

from domain.organisations import Organisation
from domain.patients import Patient
from domain.teams import CareTeam
from eventstore.personal import ERASED
from projections.base import Projection, Rows, handles
from projections.events import Ev
from projections.store import Table

TXT, INT = "text", "int"


def _tags(text: str | None) -> set[str]:
    return set(text.split(",")) if text else set()


class DirectoryProjection(Projection):
    """Who is who: the registry the other views and the scope checks look names up in."""

    name = "directory"
    tables: ClassVar[tuple[Table, ...]] = (
        Table(
            "v_orgs",
            (("id", TXT), ("kind", TXT), ("name", TXT), ("district", TXT), ("level", INT)),
            ("id",),
            (("district",),),
        ),
        Table(
            "v_residents",
            (
                ("center_id", TXT),
                ("as_of", TXT),
                ("total", INT),
                ("key_population", INT),
                ("recorded_at", TXT),
            ),
            ("center_id", "as_of"),
        ),
        Table(
            "v_teams", (("id", TXT), ("center_id", TXT), ("name", TXT)), ("id",), (("center_id",),)
        ),
        Table(
            "v_members",
            (
                ("team_id", TXT),
                ("staff_id", TXT),
                ("name", TXT),
                ("role", TXT),
                ("org_id", TXT),
                ("active", INT),
            ),
            ("team_id", "staff_id"),
        ),
        Table(
            "v_patients",
            (
                ("id", TXT),
                ("name", TXT),
                ("sex", TXT),
                ("birth_date", TXT),
                ("national_id_index", TXT),
                ("district", TXT),
                ("center_id", TXT),
                ("tags", TXT),
                ("moved_away", INT),
                ("contract_id", TXT),
                ("contract_until", TXT),
                ("registered_at", TXT),
                ("erased_at", TXT),
            ),
            ("id",),
            (("center_id",), ("national_id_index",)),
        ),
    )

    @handles(Organisation, "Registered")
    def org_registered(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_orgs",
            {
                "id": ev.aggregate_id,
                "kind": data["kind"],
                "name": data["name"],
                "district": data["district"],
                "level": data["level"],
            },
        )

    @handles(Organisation, "ResidentsRecorded")
    def residents(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_residents",
            {
                "center_id": ev.aggregate_id,
                "as_of": data["as_of"],
                "total": data["total"],
                "key_population": data["key_population"],
                "recorded_at": ev.at,
            },
        )

    @handles(CareTeam, "Formed")
    def team_formed(self, ev: Ev, rows: Rows) -> None:
        rows.put(
            "v_teams",
            {"id": ev.aggregate_id, "center_id": ev.data["center_id"], "name": ev.data["name"]},
        )

    @handles(CareTeam, "MemberJoined")
    def member_joined(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_members",
            {
                "team_id": ev.aggregate_id,
                "staff_id": data["staff_id"],
                "name": data["name"],
                "role": data["role"],
                "org_id": data["org_id"],
                "active": 1,
            },
        )

    @handles(CareTeam, "MemberLeft")
    def member_left(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_members", (ev.aggregate_id, ev.data["staff_id"]))
        if row is not None:
            rows.put("v_members", {**row, "active": 0})

    @handles(Patient, "Registered")
    def patient_registered(self, ev: Ev, rows: Rows) -> None:
        data = ev.data
        rows.put(
            "v_patients",
            {
                "id": ev.aggregate_id,
                "name": data["name"],
                "sex": data["sex"],
                "birth_date": data["birth_date"],
                "national_id_index": data["national_id_index"],
                "district": data["district"],
                "center_id": data["center_id"],
                "tags": "",
                "moved_away": 0,
                "contract_id": None,
                "contract_until": None,
                "registered_at": ev.at,
                "erased_at": None,
            },
        )

    @handles(Patient, "Erased")
    def erased(self, ev: Ev, rows: Rows) -> None:
        """The person leaves the registry's personal columns (their tokens would no longer
        open anyway); the row stays, so what they took part in still counts."""
        self._patient(
            ev, rows, name=ERASED, birth_date=None, national_id_index=None, erased_at=ev.at
        )

    def _patient(self, ev: Ev, rows: Rows, **changes: object) -> None:
        row = rows.get("v_patients", ev.aggregate_id)
        if row is not None:
            row.update(changes)
            rows.put("v_patients", row)

    @handles(Patient, "Tagged")
    def tagged(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_patients", ev.aggregate_id)
        if row is not None:
            self._patient(ev, rows, tags=",".join(sorted(_tags(row["tags"]) | {ev.data["tag"]})))

    @handles(Patient, "Untagged")
    def untagged(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_patients", ev.aggregate_id)
        if row is not None:
            self._patient(ev, rows, tags=",".join(sorted(_tags(row["tags"]) - {ev.data["tag"]})))

    @handles(Patient, "MovedAway")
    def moved_away(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, moved_away=1)

    @handles(Patient, "Transferred")
    def transferred(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, center_id=ev.data["center_id"], district=ev.data["district"])

    @handles(Patient, "ContractTaken")
    def contract_taken(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, contract_id=ev.data["contract_id"], contract_until=ev.data["until"])

    @handles(Patient, "ContractExtended")
    def contract_extended(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, contract_until=ev.data["until"])

    @handles(Patient, "ContractReleased")
    def contract_released(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, contract_id=None, contract_until=None)

"""Directory view: organisations, resident counts, teams and members, the patient registry."""

from __future__ import annotations

from typing import ClassVar

from projections.base import Projection, Rows
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
                ("national_id", TXT),
                ("district", TXT),
                ("center_id", TXT),
                ("tags", TXT),
                ("moved_away", INT),
                ("contract_id", TXT),
                ("contract_until", TXT),
                ("registered_at", TXT),
            ),
            ("id",),
            (("center_id",), ("national_id",)),
        ),
    )
    handles: ClassVar[dict[str, str]] = {
        "Organisation.Registered": "org_registered",
        "Organisation.ResidentsRecorded": "residents",
        "CareTeam.Formed": "team_formed",
        "CareTeam.MemberJoined": "member_joined",
        "CareTeam.MemberLeft": "member_left",
        "Patient.Registered": "patient_registered",
        "Patient.Tagged": "tagged",
        "Patient.Untagged": "untagged",
        "Patient.MovedAway": "moved_away",
        "Patient.Transferred": "transferred",
        "Patient.ContractTaken": "contract_taken",
        "Patient.ContractExtended": "contract_extended",
        "Patient.ContractReleased": "contract_released",
    }

    def org_registered(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_orgs",
            {
                "id": ev.oid,
                "kind": d["kind"],
                "name": d["name"],
                "district": d["district"],
                "level": d["level"],
            },
        )

    def residents(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_residents",
            {
                "center_id": ev.oid,
                "as_of": d["as_of"],
                "total": d["total"],
                "key_population": d["key_population"],
                "recorded_at": ev.at,
            },
        )

    def team_formed(self, ev: Ev, rows: Rows) -> None:
        rows.put("v_teams", {"id": ev.oid, "center_id": ev.d["center_id"], "name": ev.d["name"]})

    def member_joined(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_members",
            {
                "team_id": ev.oid,
                "staff_id": d["staff_id"],
                "name": d["name"],
                "role": d["role"],
                "org_id": d["org_id"],
                "active": 1,
            },
        )

    def member_left(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_members", (ev.oid, ev.d["staff_id"]))
        if row is not None:
            rows.put("v_members", {**row, "active": 0})

    def patient_registered(self, ev: Ev, rows: Rows) -> None:
        d = ev.d
        rows.put(
            "v_patients",
            {
                "id": ev.oid,
                "name": d["name"],
                "sex": d["sex"],
                "birth_date": d["birth_date"],
                "national_id": d["national_id"],
                "district": d["district"],
                "center_id": d["center_id"],
                "tags": "",
                "moved_away": 0,
                "contract_id": None,
                "contract_until": None,
                "registered_at": ev.at,
            },
        )

    def _patient(self, ev: Ev, rows: Rows, **changes: object) -> None:
        row = rows.get("v_patients", ev.oid)
        if row is not None:
            row.update(changes)
            rows.put("v_patients", row)

    def tagged(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_patients", ev.oid)
        if row is not None:
            self._patient(ev, rows, tags=",".join(sorted(_tags(row["tags"]) | {ev.d["tag"]})))

    def untagged(self, ev: Ev, rows: Rows) -> None:
        row = rows.get("v_patients", ev.oid)
        if row is not None:
            self._patient(ev, rows, tags=",".join(sorted(_tags(row["tags"]) - {ev.d["tag"]})))

    def moved_away(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, moved_away=1)

    def transferred(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, center_id=ev.d["center_id"], district=ev.d["district"])

    def contract_taken(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, contract_id=ev.d["contract_id"], contract_until=ev.d["until"])

    def contract_extended(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, contract_until=ev.d["until"])

    def contract_released(self, ev: Ev, rows: Rows) -> None:
        self._patient(ev, rows, contract_id=None, contract_until=None)

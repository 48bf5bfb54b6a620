"""The golden history: one story through the use cases that records every kind of event.

``generate.py`` (run by hand) writes what this story stores, and what it folds to, into the
files beside this module; the tests read the stored records back into fresh stores. Nothing
here is random: ids are chosen (``stable_id("golden", ...)``), the clock is fixed and moved
by hand, and the library's event timestamps follow that clock while the story is written.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, cast
from unittest import mock
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.persistence import StoredEvent

from domain.application import CareCoordination
from domain.common import ADMINISTRATION, Actor, stable_id
from domain.contracts import Contract
from domain.followups import FollowUps
from domain.organisations import Organisation
from domain.patients import Patient
from domain.teams import CareTeam
from eventstore.mapper import PlacedMapper
from projections.events import LogReader
from projections.runner import rebuild, select
from projections.store import ViewStore

HERE = Path(__file__).resolve().parent
#: The stored events, one JSON object a line, in log order: never regenerated once checked in.
RECORDS = HERE / "records.jsonl"
#: Every aggregate of the history folded, as :func:`summary` writes it.
AGGREGATES = HERE / "aggregates.json"
#: Every view table's rows, sorted, after a rebuild from the records.
VIEWS = HERE / "views.json"

ZONE = ZoneInfo("Asia/Shanghai")
START = datetime(2025, 3, 3, 9, 0, tzinfo=ZONE)


def gid(*parts: object) -> UUID:
    return stable_id("golden", *parts)


class Clock:
    """The story's clock: the application's ``now`` and, while writing, event timestamps."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> datetime:
        self.now += timedelta(**(delta or {"minutes": 7}))
        return self.now

    def day(self, day: date, hour: int = 9) -> datetime:
        """Move on to ``hour`` o'clock of ``day`` (never backwards)."""
        moment = datetime(day.year, day.month, day.day, hour, tzinfo=ZONE)
        assert moment > self.now, f"{moment} is not after {self.now}"
        self.now = moment
        return moment

    @contextmanager
    def stamping(self) -> Iterator[None]:
        """Event timestamps (the library's ``datetime_now_with_tzinfo``) from this clock."""
        with mock.patch("eventsourcing.domain.datetime_now_with_tzinfo", self._utc):
            yield

    def _utc(self) -> datetime:
        return self.now.astimezone(ZoneInfo("UTC"))


class Cast:
    """Who and what the story is about."""

    center = gid("center", "鼓楼社区卫生服务中心")
    other_center = gid("center", "江宁社区卫生服务中心")
    hospital = gid("hospital", "鼓楼医院")
    team = gid("team", "团队一")
    other_team = gid("team", "团队二")

    @property
    def root(self) -> Actor:
        return Actor("setup", UUID(int=0))

    @property
    def admin(self) -> Actor:
        return Actor("center-admin", self.center)

    @property
    def gp(self) -> Actor:
        return Actor("gp-1", self.center)

    @property
    def other_admin(self) -> Actor:
        return Actor("center-admin-b", self.other_center)

    @property
    def desk(self) -> Actor:
        return Actor("cardio-desk", self.hospital)

    @property
    def administrator(self) -> Actor:
        return Actor("admin-1", ADMINISTRATION)


def national_id(birth: date, serial: int) -> str:
    body = f"320106{birth:%Y%m%d}{serial % 1000:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def write_story(app: CareCoordination, clock: Clock) -> list[UUID]:
    """Tell the story through the use cases (keyword arguments only); the aggregate ids."""
    c = Cast()
    ids: list[UUID] = []

    def step(call: Callable[..., Any], **kwargs: Any) -> Any:
        clock.tick()
        return call(**kwargs)

    # organisations: registered, a department, resident counts
    for id, kind, name, district, level in (
        (c.center, "community_center", "鼓楼社区卫生服务中心", "鼓楼区", None),
        (c.other_center, "community_center", "江宁社区卫生服务中心", "江宁区", None),
        (c.hospital, "hospital", "鼓楼医院", "鼓楼区", 3),
    ):
        step(
            app.register_organisation,
            kind=kind,
            name=name,
            district=district,
            actor=c.root,
            level=level,
            id=id,
        )
        ids.append(id)
    step(
        app.add_department,
        hospital_id=c.hospital,
        code="cardiology",
        name="心内科",
        actor=c.desk,
        referral_contact="王主任",
    )
    step(
        app.record_residents,
        center_id=c.center,
        total=12000,
        key_population=3400,
        as_of=date(2025, 1, 1),
        actor=c.admin,
    )
    # teams: formed, members join, one leaves
    step(app.form_team, center_id=c.center, name="团队一", actor=c.admin, id=c.team)
    step(
        app.form_team, center_id=c.other_center, name="团队二", actor=c.other_admin, id=c.other_team
    )
    ids += [c.team, c.other_team]
    for team, staff, name, role, org, actor in (
        (c.team, "gp-1", "李医生", "general_practitioner", c.center, c.admin),
        (c.team, "nurse-1", "张护士", "nurse", c.center, c.admin),
        (c.team, "cardio-1", "周医生", "specialist", c.hospital, c.admin),
        (c.other_team, "gp-b", "陈医生", "general_practitioner", c.other_center, c.other_admin),
    ):
        step(
            app.add_team_member,
            team_id=team,
            staff_id=staff,
            name=name,
            role=role,
            org_id=org,
            actor=actor,
        )
    step(app.remove_team_member, team_id=c.team, staff_id="nurse-1", actor=c.admin)

    # patients: registered (with a tag), tagged, untagged
    patients = {}
    for serial, (name, birth, tags) in enumerate(
        (
            ("王秀英", date(1950, 3, 4), ("type2_diabetes",)),
            ("刘建国", date(1961, 8, 19), ("registered_poor",)),
            ("赵敏", date(1988, 11, 2), ()),
            ("孙丽", date(1979, 5, 23), ()),
        ),
        start=101,
    ):
        pid = gid("patient", name)
        step(
            app.register_patient,
            name=name,
            sex="F" if name in ("王秀英", "赵敏", "孙丽") else "M",
            birth_date=birth,
            national_id=national_id(birth, serial),
            phone="13800000000",
            center_id=c.center,
            actor=c.admin,
            tags=tags,
            id=pid,
        )
        patients[name] = pid
        ids.append(pid)
    wang, liu, zhao, sun = patients.values()
    step(app.tag_patient, patient_id=wang, tag="hypertension", actor=c.gp)
    step(app.tag_patient, patient_id=wang, tag="hypertension", actor=c.gp, present=False)

    # contracts: signed (follow-ups opened and scheduled), renewed; a household of two
    today = clock.now.date()
    contract_wang, contract_liu = gid("contract", "王秀英"), gid("contract", "刘建国")
    step(
        app.sign_contract,
        patient_id=wang,
        team_id=c.team,
        package="chronic_disease",
        start=today,
        actor=c.gp,
        id=contract_wang,
    )
    contract_zhao, contract_sun = gid("contract", "赵敏"), gid("contract", "孙丽")
    step(
        app.sign_household,
        patient_ids=[zhao, sun],
        team_id=c.team,
        package="basic",
        start=today,
        actor=c.gp,
        household_id=gid("household", "赵"),
        ids=[contract_zhao, contract_sun],
    )
    step(
        app.sign_contract,
        patient_id=liu,
        team_id=c.team,
        package="basic",
        start=today,
        actor=c.gp,
        id=contract_liu,
    )
    ids += [contract_wang, contract_zhao, contract_sun, contract_liu]
    ids += [FollowUps.id_for(p) for p in (wang, liu, zhao, sun)]
    step(app.renew_contract, contract_id=contract_wang, years=2, actor=c.gp)

    # a visit that meets the first diabetes follow-up
    clock.day(today + timedelta(days=3))
    step(
        app.record_follow_up,
        patient_id=wang,
        on=clock.now.date(),
        kind="face_to_face",
        actor=c.gp,
        measurements={"systolic_bp": 150, "fasting_glucose": 8.2},
        note="血糖偏高",
        id=gid("visit", 1),
    )

    # referrals: the whole way up and back; one rejected; one cancelled; a return started
    up, rejected, cancelled = (
        gid("referral", "up"),
        gid("referral", "rejected"),
        gid("referral", "cancelled"),
    )
    for id, patient, urgency in ((up, wang, "urgent"), (rejected, liu, "routine")):
        step(
            app.request_referral,
            patient_id=patient,
            hospital_id=c.hospital,
            department="cardiology",
            reason="uncontrolled hypertension",
            diagnosis="I10",
            urgency=urgency,
            actor=c.gp,
            id=id,
        )
    step(app.accept_referral, referral_id=up, actor=c.desk, note="明早门诊")
    step(
        app.reject_referral,
        referral_id=rejected,
        reason_code="no_capacity",
        actor=c.desk,
        note="本周已满",
    )
    step(
        app.request_referral,
        patient_id=zhao,
        hospital_id=c.hospital,
        department="cardiology",
        reason="palpitations",
        diagnosis="R00.2",
        urgency="routine",
        actor=c.gp,
        id=cancelled,
    )
    step(app.cancel_referral, referral_id=cancelled, reason="symptoms resolved", actor=c.gp)
    clock.day(clock.now.date() + timedelta(days=1))
    step(app.record_arrival, referral_id=up, actor=c.desk)
    step(app.record_admission, referral_id=up, ward="心内科二病区", actor=c.desk)
    clock.day(clock.now.date() + timedelta(days=5))
    due = clock.now.date() + timedelta(days=14)
    step(
        app.return_to_community,
        referral_id=up,
        summary="血压控制平稳，出院",
        prescriptions=[{"drug": "氨氯地平", "dose": "5 mg qd"}],
        rehabilitation="低盐饮食，每周测血压",
        follow_up_due=due,
        actor=c.desk,
    )
    step(app.acknowledge_return, referral_id=up, actor=c.gp)
    started = gid("referral", "return started")
    step(
        app.start_return,
        patient_id=sun,
        national_id=national_id(date(1979, 5, 23), 104),
        name="孙丽",
        hospital_id=c.hospital,
        department="cardiology",
        summary="术后恢复良好",
        prescriptions=[],
        rehabilitation="两周后复查",
        follow_up_due=due,
        actor=c.desk,
        id=started,
    )
    ids += [up, rejected, cancelled, started]
    # the return's follow-up: a visit that closes the referral's loop (Referral.FollowedUp)
    clock.day(clock.now.date() + timedelta(days=2))
    followups = app.load(FollowUps, FollowUps.id_for(wang))
    owed = next(
        o["id"]
        for o in followups.open_obligations()
        if o["source_id"] == up and o["reason"] == "return_to_community"
    )
    step(
        app.record_follow_up,
        patient_id=wang,
        on=clock.now.date(),
        kind="phone",
        actor=c.gp,
        measurements={"systolic_bp": 132},
        obligation_id=owed,
        id=gid("visit", 2),
    )

    # quotas: published, booked, a booking cancelled, attended, a no-show, released
    quota, session = gid("quota", "expert"), clock.now.date() + timedelta(days=7)
    step(
        app.publish_quota,
        hospital_id=c.hospital,
        kind="expert",
        department="cardiology",
        session_date=session,
        slots=5,
        release_at=datetime(session.year, session.month, session.day, 8, tzinfo=ZONE)
        - timedelta(days=1),
        actor=c.desk,
        id=quota,
        expert="周主任",
        half_day="am",
        reserved_for_center=c.center,
    )
    ids.append(quota)
    bookings = {}
    for name, patient, referral in (
        ("wang", wang, up),
        ("liu", liu, None),
        ("zhao", zhao, None),
        ("sun", sun, None),
    ):
        bookings[name] = gid("booking", name)
        step(
            app.book_slot,
            quota_id=quota,
            patient_id=patient,
            actor=c.gp,
            referral_id=referral,
            id=bookings[name],
        )
    step(
        app.cancel_booking,
        quota_id=quota,
        booking_id=bookings["sun"],
        reason="家中有事",
        actor=c.gp,
    )
    clock.day(session - timedelta(days=1), hour=10)
    step(app.release_quota, quota_id=quota, actor=c.desk)
    clock.day(session, hour=12)
    step(
        app.record_attendance,
        quota_id=quota,
        booking_id=bookings["wang"],
        attended=True,
        actor=c.desk,
    )
    step(
        app.record_attendance,
        quota_id=quota,
        booking_id=bookings["liu"],
        attended=False,
        actor=c.desk,
    )

    # a contract moves to a team of another center (patient and follow-ups move with it), in
    # one step as it was recorded before transfers took both centers (issue #11)
    clock.tick()
    _team_change_across_centers_as_once_recorded(
        app, contract_zhao, team_id=c.other_team, reason="搬到江宁", actor=c.gp
    )
    # ended contracts: terminated (obligations withdrawn); moved away; expired after its term
    step(app.terminate_contract, contract_id=contract_wang, reason="患者要求解约", actor=c.gp)
    step(app.move_patient_away, patient_id=sun, destination="上海市", actor=c.gp)
    clock.day(today + timedelta(days=366))
    step(app.expire_contract, contract_id=contract_liu, actor=c.gp)

    # transfers between centers: the other center asks for a contracted patient, withdraws,
    # asks again and is declined, asks a third time and is released (the contract, registry
    # and follow-ups move); a patient without a contract moves as soon as it is asked
    contract_liu_again = gid("contract", "刘建国", 2)
    step(
        app.sign_contract,
        patient_id=liu,
        team_id=c.team,
        package="basic",
        start=clock.now.date(),
        actor=c.gp,
        id=contract_liu_again,
    )
    ids.append(contract_liu_again)
    asked = {"team_id": c.other_team, "actor": c.other_admin}

    def named(patient: UUID) -> dict[str, str]:
        """The resident as they name themself at the other center."""
        found = app.load(Patient, patient)
        return {"national_id": found.national_id, "name": found.name}

    step(app.request_transfer, patient_id=liu, consent="转签同意书 JN-0001", **asked, **named(liu))
    step(app.withdraw_transfer, patient_id=liu, actor=c.other_admin)
    step(app.request_transfer, patient_id=liu, consent="转签同意书 JN-0002", **asked, **named(liu))
    step(app.decline_transfer, patient_id=liu, reason="住院治疗中，出院后再议", actor=c.gp)
    step(app.request_transfer, patient_id=liu, consent="转签同意书 JN-0003", **asked, **named(liu))
    step(app.release_transfer, patient_id=liu, actor=c.gp)
    step(
        app.request_transfer, patient_id=wang, consent="转签同意书 JN-0004", **asked, **named(wang)
    )
    # an administrator erases the patient who moved away, citing the legal ground (issue #14)
    step(
        app.erase_patient,
        patient_id=sun,
        reason="保存期限届满（个人信息保护法第四十七条）",
        actor=c.administrator,
    )
    return ids


def _team_change_across_centers_as_once_recorded(
    app: CareCoordination, contract_id: UUID, *, team_id: UUID, reason: str, actor: Actor
) -> None:
    """What ``change_contract_team`` recorded for a team of another center before a move
    between centers took a transfer (the stored records hold it): the contract, the patient
    and the follow-ups moved in one commit, on the old center's word alone."""
    when = app.now()
    contract = app.load(Contract, contract_id)
    team = app.load(CareTeam, team_id)
    center = app.load(Organisation, team.center_id)
    contract.change_team(team.id, team.center_id, reason, actor, when, transfer_released=True)
    patient = app.load(Patient, contract.patient_id)
    patient._transferred(center_id=center.id, district=center.district, actor=actor, at=when)
    followups = app.load(FollowUps, FollowUps.id_for(patient.id))
    followups.transfer(center.id, actor, when)
    app.commit(contract, patient, followups)


# --- what is stored, and what it folds to ---------------------------------------------------


def stored_records(app: CareCoordination) -> list[dict[str, Any]]:
    """Every stored event in log order, its state as the exact stored JSON text."""
    out = []
    for n in app.recorder.select_notifications(0, 1_000_000, inclusive_of_start=False):
        out.append(
            {
                "position": n.id,
                "originator_id": str(n.originator_id),
                "originator_version": n.originator_version,
                "topic": n.topic,
                "state": bytes(n.state).decode("utf-8"),
            }
        )
    return out


def read_records() -> list[dict[str, Any]]:
    with RECORDS.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def insert_records(app: CareCoordination, records: list[dict[str, Any]]) -> None:
    """The records into ``app``'s (empty) store, through its recorder, in their order
    (compressed and encrypted as ``app`` stores events, when it does)."""
    mapper = cast(PlacedMapper, app.mapper)

    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=UUID(r["originator_id"]),
                originator_version=r["originator_version"],
                topic=r["topic"],
                state=mapper.stored_state(
                    UUID(r["originator_id"]),
                    r["originator_version"],
                    r["topic"],
                    r["state"].encode("utf-8"),
                ),
            )
            for r in records
        ]
    )


def canonical(value: Any) -> Any:
    """A value as plain, ordered JSON: ids and moments as text, sets sorted."""
    if isinstance(value, Enum):
        return canonical(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(canonical(k)): canonical(v) for k, v in sorted(value.items(), key=str)}
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__}")


def summary(aggregate: Aggregate) -> dict[str, Any]:
    """A folded aggregate's attributes (its pending events left out)."""
    attributes = {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}
    return {"type": type(aggregate).__qualname__, **canonical(attributes)}


def aggregate_ids(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(r["originator_id"])
    return list(seen)


def folded(app: CareCoordination, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every aggregate of ``records`` as the repository folds it, by id."""
    return {id: summary(app.repository.get(UUID(id))) for id in aggregate_ids(records)}


#: What the golden views show for a blind index (a keyed hash, different in every store).
BLIND_INDEXED = "<blind index>"


def view_rows(store: ViewStore) -> dict[str, list[dict[str, Any]]]:
    """Every view table's rows, sorted."""
    out = {}
    for p in select():
        for t in p.tables:
            rows = store.rows(f"SELECT {', '.join(t.names)} FROM {t.name}")
            for r in rows:  # keyed by each store's own blind-index key: whether there is one
                if r.get("national_id_index") is not None:
                    r["national_id_index"] = BLIND_INDEXED
            out[t.name] = sorted(
                (dict(r) for r in rows), key=lambda r: json.dumps(r, ensure_ascii=False)
            )
    return out


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


@dataclass
class Replay:
    """A fresh store and its views, for the golden records."""

    app: CareCoordination
    store: ViewStore

    def insert(self, records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        records = read_records() if records is None else records
        insert_records(self.app, records)
        return records

    def rebuilt_views(self) -> dict[str, list[dict[str, Any]]]:
        rebuild(self.store, LogReader(self.app), pace_gc=False)
        return view_rows(self.store)


def expected_aggregates() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(AGGREGATES.read_text(encoding="utf-8"))
    return loaded


def expected_views() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VIEWS.read_text(encoding="utf-8"))
    return loaded


def domain_event_classes() -> list[type[DomainEvent]]:
    """Every event class the aggregates of ``domain/`` declare (``@event("Name")``); the
    library's ``Event`` base and unused default ``Created`` classes left out."""
    import domain

    found: list[type[DomainEvent]] = []
    for module_info in pkgutil.iter_modules(domain.__path__):
        module = importlib.import_module(f"domain.{module_info.name}")
        for aggregate in vars(module).values():
            if not (
                isinstance(aggregate, type)
                and issubclass(aggregate, Aggregate)
                and aggregate.__module__ == module.__name__
            ):
                continue
            for name, value in vars(aggregate).items():
                if (
                    name not in ("Event", "Created")
                    and isinstance(value, type)
                    and issubclass(value, DomainEvent)
                ):
                    found.append(value)
    return found

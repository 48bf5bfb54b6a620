"""The read access log on both stores: written off the request path and whole on a clean stop,
one chain under several writers, tampering named by position and kind, and the queries
recording the rows each reader got about each patient."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from audit.access import (
    AccessLog,
    AccessRecord,
    Broken,
    append,
    ensure_table,
    record_digest,
    verify_access_log,
)
from domain.application import CareCoordination
from jiayi.bootstrap import Projections, view_location
from jiayi.settings import Settings
from projections.queries import Page, Reader, Scope
from projections.store import ViewStore
from tests.conftest import Clock
from tests.world import World, build_world


@pytest.fixture
def store(settings: Settings) -> Iterator[ViewStore]:
    found = view_location(settings).open()
    ensure_table(found)
    yield found
    found.close()


def opener(settings: Settings) -> ViewStore:
    return view_location(settings).open()


def records(n: int, patient: str | None = None) -> list[AccessRecord]:
    pid = patient or str(uuid4())
    return [
        AccessRecord(
            at=f"2026-06-01T09:00:{i % 60:02d}.000000+00:00",
            staff_id=f"gp-{i}",
            org_id=str(UUID(int=i + 1)),
            role="center_staff",
            district="鼓楼区",
            patient_id=pid,
            resource="timeline",
            rows=i,
        )
        for i in range(n)
    ]


def count(store: ViewStore) -> int:
    found = store.one("SELECT COUNT(*) AS n FROM access_log")
    assert found is not None
    return int(found["n"])


def test_records_wait_in_memory_and_a_clean_stop_writes_them_all(
    settings: Settings, store: ViewStore
) -> None:
    # a writer that never wakes by itself: only the stop can write these
    log = AccessLog(lambda: opener(settings), interval=3600, batch=10_000)
    reader = Reader("gp-1", "center_staff", uuid4(), "鼓楼区")
    patients = [str(uuid4()) for _ in range(1500)]
    for i, pid in enumerate(patients):
        log.record(reader, "timeline", {pid: i % 7})
    assert count(store) == 0  # recording did no I/O
    assert log.pending == len(patients)
    log.close()
    assert log.pending == 0
    assert count(store) == len(patients)
    found = store.rows("SELECT patient_id, rows, staff_id, role, org_id FROM access_log")
    assert sorted(r["patient_id"] for r in found) == sorted(patients)
    assert {(r["staff_id"], r["role"], r["org_id"]) for r in found} == {
        ("gp-1", "center_staff", str(reader.org_id))
    }
    check = verify_access_log(store)
    assert check.ok and check.rows == check.last_position == len(patients)


def test_the_writer_thread_writes_batches_by_itself(settings: Settings, store: ViewStore) -> None:
    log = AccessLog(lambda: opener(settings), interval=0.05, batch=100)
    try:
        log.record(None, "search", {str(uuid4()): 1 for _ in range(250)})
        for _ in range(200):
            if count(store) == 250:
                break
            threading.Event().wait(0.05)
        assert count(store) == 250
        # a read without a named reader is still recorded, as unattributed
        assert store.one("SELECT DISTINCT role FROM access_log") == {"role": "unattributed"}
    finally:
        log.close()


def test_writers_of_several_processes_keep_one_chain(settings: Settings, store: ViewStore) -> None:
    """Each writer has its own connection (as each API process does); the table's lock keeps
    positions and links in one order."""
    logs = [AccessLog(lambda: opener(settings), interval=3600, batch=50) for _ in range(3)]
    try:

        def work(log: AccessLog) -> None:
            for i in range(400):
                log.record(Reader(f"s-{i}", "auditor"), "timeline", {str(uuid4()): 1})
                if i % 40 == 0:
                    log.flush()

        threads = [threading.Thread(target=work, args=(log,)) for log in logs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for log in logs:
            log.close()
    check = verify_access_log(store)
    assert check.ok, check.broken
    assert check.rows == check.last_position == 1200


def tamper(store: ViewStore, sql: str, *params: object) -> None:
    with store.transaction():
        store.execute(sql, params)


def test_the_chain_names_rows_changed_deleted_or_inserted(
    settings: Settings, store: ViewStore
) -> None:
    append(store, records(10))
    assert verify_access_log(settings).ok  # by settings too, as `jiayi audit verify` may
    # a field changed
    tamper(store, "UPDATE access_log SET rows = 999 WHERE position = 3")
    assert verify_access_log(store).broken == (Broken(3, "changed"),)
    # changed with a digest made to match: the link gives it away
    row = store.one("SELECT * FROM access_log WHERE position = 5")
    assert row is not None
    forged = AccessRecord(
        row["at"], "someone-else", row["org_id"], row["role"], row["district"],
        row["patient_id"], row["resource"], int(row["rows"]),
    )  # fmt: skip
    tamper(
        store,
        "UPDATE access_log SET staff_id = ?, digest = ? WHERE position = 5",
        "someone-else",
        record_digest(forged),
    )
    # a row deleted
    tamper(store, "DELETE FROM access_log WHERE position = 7")
    # a row inserted at the end without the chain
    last = store.one("SELECT * FROM access_log WHERE position = 10")
    assert last is not None
    tamper(
        store,
        "INSERT INTO access_log (position, at, staff_id, org_id, role, district, patient_id, "
        "resource, rows, digest, hash) VALUES (11, ?, 'ghost', NULL, 'auditor', NULL, ?, "
        "'timeline', 1, ?, ?)",
        last["at"],
        last["patient_id"],
        bytes(last["digest"]),
        bytes(last["hash"]),
    )
    check = verify_access_log(store)
    assert check.broken == (
        Broken(3, "changed"),
        Broken(5, "link"),
        Broken(7, "deleted", 7),
        Broken(11, "changed"),
        Broken(11, "link"),
    )
    assert not check.ok and check.rows == 10 and check.last_position == 11
    assert str(check.broken[2]) == "access log: position 7 deleted"
    # rows deleted at the start and a run of them in the middle
    tamper(store, "DELETE FROM access_log WHERE position IN (1, 2)")
    tamper(store, "DELETE FROM access_log WHERE position BETWEEN 8 AND 9")
    assert [b for b in verify_access_log(store).broken if b.kind == "deleted"] == [
        Broken(1, "deleted", 2),
        Broken(7, "deleted", 9),
    ]


def test_an_empty_log_is_intact(settings: Settings) -> None:
    check = verify_access_log(settings)
    assert check.ok and check.rows == 0 and check.last_position == 0


# --- the queries record what each reader got -------------------------------------------------


def logged(views: Projections, staff: str) -> list[tuple[str, str, int]]:
    views.queries.flush()
    return [
        (r["patient_id"], r["resource"], int(r["rows"]))
        for r in views.queries.store.rows(
            "SELECT patient_id, resource, rows FROM access_log WHERE staff_id = ? "
            "ORDER BY position",
            (staff,),
        )
    ]


def test_each_query_records_the_rows_it_returned_per_patient(
    app: CareCoordination, views: Projections, clock: Clock
) -> None:
    world: World = build_world(app)
    q = views.queries
    one, two = world.contracted_patient(serial=1), world.contracted_patient(serial=2)
    referrals = [world.referral(one), world.referral(two)]
    for r in referrals:
        app.accept_referral(r, actor=world.hospital_staff)
        app.record_arrival(r, actor=world.hospital_staff)
        app.return_to_community(
            r,
            summary="稳定",
            prescriptions=[],
            rehabilitation="随访",
            follow_up_due=world.today + timedelta(days=5),
            actor=world.hospital_staff,
        )
    assert q.wait_for(app.max_position())
    nurse = Scope(
        org_id=world.center,
        org_kind="community_center",
        reader=Reader("nurse-1", "center_staff", world.center, "鼓楼区"),
    )
    timeline = q.timeline(nurse, one)
    assert timeline
    assert logged(views, "nurse-1") == [(str(one), "timeline", len(timeline))]

    # a worklist: one record per patient on it, with that patient's rows
    work = q.center_worklist(nurse, world.center, world.today, Page())
    assert work is not None
    returns = work["returns_awaiting_acknowledgement"]
    assert {r["patient_id"] for r in returns} == {str(one), str(two)}
    assert set(logged(views, "nurse-1")[1:]) == {
        (str(one), "worklist.center", 1),
        (str(two), "worklist.center", 1),
    }
    # one patient's rows only (a journey page): the others are neither read nor recorded
    mine = q.center_worklist(nurse, world.center, world.today, Page(), patient_id=two)
    assert mine is not None
    assert [r["patient_id"] for r in mine["returns_awaiting_acknowledgement"]] == [str(two)]
    assert logged(views, "nurse-1")[3:] == [(str(two), "worklist.center", 1)]

    # search: each patient found; a registry entry: one row
    found = q.search_patients(nurse, "秀英", Page())
    assert {p["id"] for p in found} == {str(one), str(two)}
    assert q.patient(nurse, one) is not None
    assert set(logged(views, "nurse-1")[4:]) == {
        (str(one), "search", 1),
        (str(two), "search", 1),
        (str(one), "registry", 1),
    }

    # absent or not visible: nothing recorded about the patient
    other = Scope(
        org_id=world.other_center,
        org_kind="community_center",
        reader=Reader("desk-9", "center_staff", world.other_center, "江宁区"),
    )
    assert q.patient(other, one) is None and q.timeline(other, one) is None
    assert q.referral(other, referrals[0]) is None
    assert q.search_patients(other, "秀英", Page()) == []
    assert logged(views, "desk-9") == []

    # aggregate figures name no patient
    coordinator = Scope(district="鼓楼区", reader=Reader("coord-1", "coordinator", None, "鼓楼区"))
    assert q.kpis(coordinator, world.today, world.today, center_id=world.center) is not None
    assert q.teams(coordinator, Page())
    assert logged(views, "coord-1") == []
    # but the patients it reads are recorded
    assert q.patient(coordinator, two) is not None
    assert logged(views, "coord-1") == [(str(two), "registry", 1)]

    # the hospital's referral and worklist; the auditor's reading of the log itself
    desk = Scope(
        org_id=world.hospital,
        org_kind="hospital",
        reader=Reader("cardio-desk", "hospital_staff", world.hospital, "鼓楼区"),
    )
    assert q.referral(desk, referrals[0]) is not None
    assert logged(views, "cardio-desk") == [(str(one), "referral", 1)]
    auditor = Scope(everything=True, reader=Reader("aud-1", "auditor"))
    entries = q.access_entries(auditor, one, Page())
    assert entries is not None and entries[0]["staff_id"] == "cardio-desk"
    assert logged(views, "aud-1") == [(str(one), "access-log", len(entries))]
    assert q.access_entries(auditor, one, Page())[0]["resource"] == "access-log"
    # only auditors, only patients that exist
    assert q.access_entries(nurse, one, Page()) is None
    assert q.access_entries(auditor, uuid4(), Page()) is None
    assert verify_access_log(q.store).ok


def test_jiayi_audit_verify_checks_the_access_log_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One command for the auditor: a changed access-log row fails `jiayi audit verify`."""
    from jiayi import cli

    env = {"JIAYI_DATA_DIR": str(settings.data_dir)}
    if settings.uses_postgres:
        env |= {
            "JIAYI_POSTGRES_URL": settings.postgres_dsn(),
            "JIAYI_POSTGRES_SCHEMA": settings.postgres_schema or "",
        }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo", "--patients", "20", "--seed", "3"]) == 0
    store = view_location(settings).open()
    try:
        ensure_table(store)
        append(store, records(3))
        capsys.readouterr()
        assert cli.main(["audit", "verify"]) == 0
        assert "read access log: 3 rows" in capsys.readouterr().out
        store.execute("UPDATE access_log SET rows = 99 WHERE position = 2")
    finally:
        store.close()
    assert cli.main(["audit", "verify", "--json"]) == 1
    out = capsys.readouterr().out
    assert '"kind": "access-changed"' in out and '"position": 2' in out

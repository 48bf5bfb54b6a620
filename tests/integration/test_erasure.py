"""Erasure by key destruction (issue #14): an erased patient leaves every read and every as-of
moment, the anonymous facts still count, and the history still verifies; the master key that
wraps every patient's key is checked at start and can be rotated without touching an event."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.verify import verify
from domain.common import ADMINISTRATION, Actor, NotFound, NotPermitted
from domain.patients import Patient
from eventstore.keys import KeyRingError, MasterKey
from jiayi.bootstrap import (
    Projections,
    build_application,
    erase_patient,
    keyring_of,
    view_location,
)
from jiayi.settings import Settings
from projections.queries import Page, Scope
from tests.conftest import Clock
from tests.world import World, build_world, national_id

EVERYTHING = Scope(everything=True)
NAME, BORN, SERIAL = "欧阳娜娜", date(1951, 6, 7), 481
DIAGNOSIS, NOTE = "左肺占位待查", "欧阳娜娜自述夜间咳嗽"
ADMIN = Actor("admin-1", ADMINISTRATION)


def _text(found: Any) -> str:
    return json.dumps(found, ensure_ascii=False, default=str)


def _journey(world: World, clock: Clock) -> tuple[Any, Any]:
    app = world.app
    pid = world.patient(name=NAME, birth=BORN, tags=("hypertension",), serial=SERIAL)
    app.sign_contract(pid, team_id=world.team, package="basic", start=world.today, actor=world.gp)
    referral = app.request_referral(
        pid,
        hospital_id=world.hospital,
        department="cardiology",
        reason=f"{NAME} 胸痛三天",
        diagnosis=DIAGNOSIS,
        urgency="urgent",
        actor=world.gp,
    ).id
    clock.advance(hours=2)
    app.accept_referral(referral, actor=world.hospital_staff)
    app.record_follow_up(pid, on=world.today, kind="phone", note=NOTE, actor=world.gp)
    return pid, referral


def test_an_erased_patient_leaves_every_read_and_every_moment_and_the_facts_still_count(
    world: World, views: Projections, clock: Clock, settings: Settings
) -> None:
    app, q = world.app, views.queries
    pid, referral = _journey(world, clock)
    center = Scope(org_id=world.center, org_kind="community_center")
    hospital = Scope(org_id=world.hospital, org_kind="hospital")
    assert q.wait_for(app.max_position())
    clock.advance(hours=1)
    before = datetime.now(UTC)
    month = (world.today.replace(day=1), world.today + timedelta(days=1))
    kpis = q.kpis(EVERYTHING, *month, center_id=world.center)
    workload = q.team_workload(center, world.team, world.today)
    # what a reader saw before: the person, found by name and by resident id number
    seen = q.timeline(center, pid)
    assert NAME in _text(q.patient(center, pid))
    assert f"{NAME} 胸痛三天" in _text(seen)  # the referral's reason, in its entry
    assert [p["id"] for p in q.search_patients(center, NAME[:2], Page())] == [str(pid)]
    nid = national_id(BORN, SERIAL)
    assert [p["id"] for p in q.search_patients(center, nid, Page())] == [str(pid)]
    replayed_before = q.timeline(EVERYTHING, pid, as_of=before)  # an as-of replay, kept open
    assert NAME in _text(replayed_before)

    clock.advance(hours=1)
    erase_patient(app, pid, reason="保存期限届满", actor=ADMIN)
    assert q.wait_for(app.max_position())

    personal = (NAME, NAME[:2], nid, "13800000000", DIAGNOSIS, NOTE, BORN.isoformat())
    reads = {
        "registry": q.patient(center, pid),
        "registry (auditor)": q.patient(EVERYTHING, pid),
        "timeline": q.timeline(center, pid),
        "timeline (hospital)": q.timeline(hospital, pid),
        "referral": q.referral(center, referral),
        "worklist": q.center_worklist(center, world.center, world.today, Page()),
        "hospital worklist": q.hospital_worklist(hospital, world.hospital, Page()),
        "replay kept open": q.timeline(EVERYTHING, pid, as_of=before),
        "a new replay of a moment before": q.timeline(
            EVERYTHING, pid, as_of=before - timedelta(minutes=30)
        ),
        "registry as of before": q.patient(EVERYTHING, pid, as_of=before),
        "now": q.timeline(EVERYTHING, pid, as_of=datetime.now(UTC)),
    }
    for what, found in reads.items():
        leaked = [p for p in personal if p in _text(found)]
        assert not leaked, f"{what} still shows {len(leaked)} personal values"
    registry = reads["registry"]
    assert registry is not None and registry["erased"] is True and registry["name"] == "[erased]"
    assert reads["timeline"] is not None and len(reads["timeline"]) == len(seen or []) + 1
    last = reads["timeline"][-1]
    assert (last["kind"], last["summary"]) == ("registry.erased", "Erased: 保存期限届满")
    assert any("[erased]" in e["summary"] for e in reads["timeline"])  # the referral's reason
    for term in (NAME[:2], nid, str(pid)):
        assert q.search_patients(EVERYTHING, term, Page()) == []
    assert q.patient_id_by_national_id(nid) is None
    # the anonymous facts still count, now and as of before
    assert q.kpis(EVERYTHING, *month, center_id=world.center) == kpis
    assert q.kpis(EVERYTHING, *month, center_id=world.center, as_of=before) == kpis
    assert q.team_workload(center, world.team, world.today) == workload
    # nothing more is recorded of the person; the history still verifies (chain of ciphertext)
    with pytest.raises(NotFound):
        app.tag_patient(pid, tag="type2_diabetes", actor=world.gp)
    with pytest.raises(NotFound):
        app.record_follow_up(pid, on=world.today, kind="phone", note="again", actor=world.gp)
    assert app.load(Patient, pid).erased
    store = view_location(settings).open()
    try:
        report = verify(store)
    finally:
        store.close()
    assert report.ok and report.events == app.max_position()


def test_erasing_again_finishes_an_erasure_and_an_unknown_patient_is_not_found(
    world: World, clock: Clock
) -> None:
    app = world.app
    pid = world.patient(name=NAME, birth=BORN, serial=SERIAL)
    app.erase_patient(pid, reason="record made in error", actor=ADMIN)  # the key not destroyed
    keyring = keyring_of(app)
    assert keyring.aead(pid) is not None
    erase_patient(app, pid, reason="record made in error", actor=ADMIN)
    assert keyring.aead(pid) is None and keyring.erased(pid)
    with pytest.raises(NotFound):
        erase_patient(app, world.center, reason="x", actor=ADMIN)  # not a patient
    other = world.patient(name="第三人", serial=483)
    with pytest.raises(NotPermitted):  # the patient's own center may not erase them
        erase_patient(app, other, reason="x", actor=world.center_admin)
    assert keyring.aead(other) is not None and not app.load(Patient, other).erased


def test_another_process_stops_reading_a_patient_once_erased(
    world: World, settings: Settings
) -> None:
    """A key cached in memory by another process (an API replica) is dropped at its next read."""
    app = world.app
    pid = world.patient(name=NAME, birth=BORN, serial=SERIAL)
    other = build_application(settings)
    try:
        assert other.load(Patient, pid).name == NAME  # its key ring caches the key
        erase_patient(app, pid, reason="保存期限届满", actor=ADMIN)
        keyring = keyring_of(other)
        keyring.refresh()
        assert keyring.aead(pid) is None
        assert other.load(Patient, pid).erased
    finally:
        other.close()


def test_rotating_the_master_key_rewraps_every_key_and_touches_no_event(
    world: World, settings: Settings, tmp_path: Path
) -> None:
    app = world.app
    pid = world.patient(name=NAME, birth=BORN, serial=SERIAL)
    events = [
        (n.id, bytes(n.state)) for n in app.recorder.select_notifications(start=1, limit=10_000)
    ]
    stale = build_application(settings)  # another process, still holding the old key
    new_file = tmp_path / "rotated.key"
    rotated = keyring_of(app).rotate(MasterKey.create(new_file))
    assert rotated >= 2  # the patient's key and the blind index's
    after = [
        (n.id, bytes(n.state)) for n in app.recorder.select_notifications(start=1, limit=10_000)
    ]
    assert after == events
    # the process left with the old key makes no key nobody could open: it is told to restart
    try:
        with pytest.raises(KeyRingError, match="restart it with the rotated key file"):
            stale.register_patient(
                "新病人",
                sex="M",
                birth_date=BORN,
                national_id=national_id(BORN, 990),
                phone="13900000000",
                center_id=world.center,
                actor=world.center_admin,
            )
    finally:
        stale.close()
    # the old key file no longer opens the store, and says why; the new one does
    with pytest.raises(KeyRingError, match=r"wrapped by master key .*: the wrong key file"):
        build_application(settings)
    moved = settings.model_copy(update={"master_key_file": new_file})
    reopened = build_application(moved)
    try:
        assert reopened.load(Patient, pid).name == NAME
    finally:
        reopened.close()


def test_a_missing_or_wrong_master_key_stops_start_up_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JIAYI_MASTER_KEY_FILE", raising=False)
    embedded = Settings(data_dir=tmp_path / "data", postgres_url=None)
    app = build_application(embedded)  # the embedded default makes its key
    try:
        world = build_world(app)
        pid = world.patient(name=NAME, birth=BORN, serial=SERIAL)
    finally:
        app.close()
    key = embedded.data_dir / "keys" / "master.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.rename(tmp_path / "elsewhere.key")
    with pytest.raises(KeyRingError, match=r"master key file .* is missing, and this store holds"):
        build_application(embedded)
    assert not key.exists()  # no new key was made over the store's keys
    wrong = tmp_path / "wrong.key"
    MasterKey.create(wrong)
    with pytest.raises(KeyRingError, match=r"not by the one in .*wrong\.key"):
        build_application(embedded.model_copy(update={"master_key_file": wrong}))
    garbled = tmp_path / "garbled.key"
    garbled.write_text("not base64 at all\n")
    with pytest.raises(KeyRingError, match="is not base64"):
        build_application(embedded.model_copy(update={"master_key_file": garbled}))
    restored = embedded.model_copy(update={"master_key_file": tmp_path / "elsewhere.key"})
    app = build_application(restored)
    try:
        assert app.load(Patient, pid).name == NAME
    finally:
        app.close()

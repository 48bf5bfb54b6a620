"""Provable history: every kind of tampering with the stored rows is named by `jiayi audit verify`
(position and kind), on both stores; a row not as recorded is refused wherever it is read.

The story is the golden history (90 events, every event class), stored through the recorder;
the tampering is done as someone with database access would: plain SQL on the tables.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from audit import seals as sealing
from audit.verify import Report, verify
from domain.application import CareCoordination
from eventstore.chain import GENESIS, extend
from eventstore.errors import DamagedEvent
from eventstore.recorders import tables
from jiayi import cli
from jiayi.bootstrap import build_application
from jiayi.settings import Settings
from projections.store import ViewStore
from tests.golden import history


class Db:
    """Plain SQL on the event store's tables, as an intruder would use it."""

    def __init__(self, settings: Settings) -> None:
        self.store = sealing.open_store(settings)
        self.names = tables(self.store.postgres)
        self.pos = self.names.position

    def state(self, position: int) -> bytes:
        row = self.store.one(
            f"SELECT state FROM {self.names.events} WHERE {self.pos} = ?", (position,)
        )
        assert row is not None
        return bytes(row["state"])

    def set_state(self, position: int, state: bytes) -> None:
        self.store.execute(
            f"UPDATE {self.names.events} SET state = ? WHERE {self.pos} = ?", (state, position)
        )

    def delete(self, position: int) -> None:
        self.store.execute(f"DELETE FROM {self.names.events} WHERE {self.pos} = ?", (position,))

    def renumber(self, a: int, b: int) -> None:
        """Exchange the positions of two rows (their order in the log)."""
        for frm, to in ((a, -1), (b, a), (-1, b)):
            self.store.execute(
                f"UPDATE {self.names.events} SET {self.pos} = ? WHERE {self.pos} = ?", (to, frm)
            )

    def insert_copy(self, position: int, version: int) -> None:
        self.store.execute(
            f"INSERT INTO {self.names.events} (originator_id, originator_version, topic, state) "
            f"SELECT originator_id, ?, topic, state FROM {self.names.events} "
            f"WHERE {self.pos} = ?",
            (version, position),
        )

    def rechain(self, after: int) -> None:
        """Recompute every digest and link after ``after`` from the rows as they are now:
        what an intruder who knows the scheme, but not the signing key, would do."""
        n = self.names
        before = self.store.one(
            f"SELECT hash FROM {n.events} WHERE {self.pos} <= ? ORDER BY {self.pos} DESC LIMIT 1",
            (after,),
        )
        rows = self.store.rows(
            f"SELECT {self.pos} AS p, originator_id, originator_version, topic, state "
            f"FROM {n.events} WHERE {self.pos} > ? ORDER BY {self.pos}",
            (after,),
        )
        links = extend(
            bytes(before["hash"]) if before else GENESIS,
            (
                (
                    r["p"],
                    r["originator_id"]
                    if isinstance(r["originator_id"], UUID)
                    else UUID(r["originator_id"]),
                    r["originator_version"],
                    r["topic"],
                    bytes(r["state"]),
                )
                for r in rows
            ),
        )
        for k in links:
            self.store.execute(
                f"UPDATE {n.events} SET digest = ?, hash = ? WHERE {self.pos} = ?",
                (k.digest, k.hash, k.position),
            )

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def story(settings: Settings) -> Iterator[tuple[CareCoordination, list[dict[str, Any]]]]:
    app = build_application(settings)
    records = history.read_records()
    history.insert_records(app, records)
    yield app, records
    app.close()


@pytest.fixture
def db(settings: Settings, story: Any) -> Iterator[Db]:
    found = Db(settings)
    yield found
    found.close()


@pytest.fixture
def key(settings: Settings) -> Ed25519PrivateKey:
    """The deployment's signing key, in a file outside the database."""
    return sealing.create_key(settings.data_dir.parent / "seal-key.pem")


def check(settings: Settings, key: Ed25519PrivateKey | None = None, **kw: Any) -> Report:
    store = sealing.open_store(settings)
    try:
        return verify(store, public=None if key is None else key.public_key(), **kw)
    finally:
        store.close()


def kinds(report: Report) -> list[tuple[int, str]]:
    return [(f.position, f.kind) for f in report.findings]


def seal(settings: Settings, key: Ed25519PrivateKey) -> sealing.Seal:
    sealer = sealing.Sealer(settings, key)
    try:
        made = sealer.seal(force=True)
    finally:
        sealer.close()
    assert made is not None
    return made


def test_an_untouched_history_verifies(settings: Settings, story: Any, key: Any) -> None:
    seal(settings, key)
    report = check(settings, key)
    assert report.ok, report.findings
    head = len(history.read_records())
    assert (report.events, report.end, report.seals) == (head, head, 1)


def test_a_changed_value_is_named(settings: Settings, db: Db) -> None:
    state = db.state(30)
    changed = state.replace(b"2025-03-03", b"2025-03-02", 1)  # a date moved back a day
    assert changed != state
    db.set_state(30, changed)
    report = check(settings)
    assert kinds(report) == [(30, "changed")]
    assert report.findings[0].detail == "its stored state is not the one recorded"


def test_a_flipped_byte_is_named_and_refused_when_read(
    settings: Settings, db: Db, story: Any
) -> None:
    app, records = story
    state = bytearray(db.state(12))
    state[len(state) // 2] ^= 0x01
    db.set_state(12, bytes(state))
    assert kinds(check(settings)) == [(12, "changed")]
    aggregate = UUID(records[11]["originator_id"])
    with pytest.raises(DamagedEvent) as raised:
        app.recorder.select_events(aggregate)
    assert raised.value.position == 12 and raised.value.originator_id == aggregate
    with pytest.raises(DamagedEvent, match="position 12"):
        app.recorder.select_notifications(1, 100)


def test_a_deleted_row_is_named_with_its_aggregate(settings: Settings, db: Db, story: Any) -> None:
    """The row and its link are gone: the next link no longer follows, and the aggregate's
    versions have a hole, which names it."""
    _, records = story
    db.delete(40)
    report = check(settings)
    assert kinds(report) == [(40, "deleted")]
    found = report.findings[0]
    assert "position 40" in found.detail
    assert found.aggregate == records[39]["originator_id"]
    assert f"lost version {records[39]['originator_version']}" in found.detail


def test_an_inserted_row_is_named_and_refused_when_read(
    settings: Settings, db: Db, story: Any
) -> None:
    app, records = story
    db.insert_copy(5, version=99)
    report = check(settings)
    assert kinds(report) == [(len(records) + 1, "inserted")]
    with pytest.raises(DamagedEvent, match="not in the hash chain"):
        app.recorder.select_events(UUID(records[4]["originator_id"]))


def test_two_swapped_states_are_named(settings: Settings, db: Db) -> None:
    a, b = db.state(20), db.state(21)
    db.set_state(20, b)
    db.set_state(21, a)
    report = check(settings)
    assert kinds(report) == [(20, "swapped"), (21, "swapped")]
    assert "position 21" in report.findings[0].detail


def test_reordered_rows_are_named(settings: Settings, db: Db) -> None:
    db.renumber(50, 60)
    report = check(settings)
    assert kinds(report) == [(50, "reordered"), (60, "reordered")]
    assert "position 60" in report.findings[0].detail


def test_a_chain_recomputed_without_the_key_is_caught_by_the_seals(
    settings: Settings, db: Db, key: Ed25519PrivateKey
) -> None:
    """Seals after position 34 and after 35 (the history as it was being written); the
    intruder changes 35 and recomputes every digest and link: the chain alone verifies, the
    seal no longer does, and the change is placed between the two seals."""
    store = db.store
    n = db.names
    # seals as the schedule makes them while the log grows: at 34, then at the head (90)
    head34 = store.one(f"SELECT hash FROM {n.events} WHERE {db.pos} = 34")
    assert head34 is not None
    sealed34 = sealing.sign(key, 34, bytes(head34["hash"]))
    sealing.SealBook(store).add(sealed34)
    seal(settings, key)
    assert check(settings, key).ok

    state = bytearray(db.state(35))
    state[-3] ^= 0x01
    db.set_state(35, bytes(state))
    db.rechain(34)
    report = check(settings, key)
    assert kinds(report) == [(35, "rewritten")]
    assert "between positions 35 and 90" in report.findings[0].detail
    # without a seal, the rewrite would not be seen: the seals are what catch it
    store.execute(f"DELETE FROM {n.seals}")
    assert check(settings, key).ok


def test_seals_deleted_from_the_database_are_found_in_the_copy_held_elsewhere(
    settings: Settings, db: Db, key: Ed25519PrivateKey
) -> None:
    seal(settings, key)
    db.store.execute(f"DELETE FROM {db.names.seals}")
    elsewhere = sealing.read_log(sealing.seal_log_path(settings))
    assert kinds(check(settings, key, elsewhere=elsewhere)) == [(90, "seal-missing")]


def test_a_truncated_log_is_caught_by_a_seal(
    settings: Settings, db: Db, key: Ed25519PrivateKey
) -> None:
    seal(settings, key)
    for position in (89, 90):
        db.delete(position)
    report = check(settings, key)
    assert kinds(report) == [(89, "deleted")]
    assert "events after 88 were deleted" in report.findings[0].detail


def test_a_seal_signed_with_another_key_is_forged(
    settings: Settings, db: Db, key: Ed25519PrivateKey
) -> None:
    other = Ed25519PrivateKey.generate()
    head = sealing.SealBook(db.store).head()
    assert head is not None
    sealing.SealBook(db.store).add(sealing.sign(other, *head))
    assert kinds(check(settings, key)) == [(90, "forged-seal")]


def test_encrypted_states_swapped_between_rows_do_not_decrypt_at_their_new_place(
    settings: Settings, tmp_path: Path
) -> None:
    """With a cipher key, the row's aggregate, version and topic are bound to its state: two
    states exchanged between patients (and the chain recomputed to hide it) fail to decrypt,
    naming the row."""
    encrypted = settings.model_copy(
        update={"cipher_key": SecretStr(base64.b64encode(os.urandom(32)).decode())}
    )
    app = build_application(encrypted)
    try:
        records = history.read_records()
        history.insert_records(app, records)
        db = Db(encrypted)
        try:
            a, b = db.state(2), db.state(3)
            db.set_state(2, b)
            db.set_state(3, a)
            db.rechain(1)
        finally:
            db.close()
        with pytest.raises(DamagedEvent, match="does not decrypt at its place") as raised:
            app.recorder.select_events(UUID(records[1]["originator_id"]))
            app.mapper.to_domain_event(
                app.recorder.select_events(UUID(records[1]["originator_id"]))[0]
            )
        assert raised.value.originator_id == UUID(records[1]["originator_id"])
    finally:
        app.close()


def test_the_command_verifies_a_demo_and_fails_on_damage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"JIAYI_DATA_DIR": str(settings.data_dir)}
    if settings.uses_postgres:
        env |= {
            "JIAYI_POSTGRES_URL": settings.postgres_dsn(),
            "JIAYI_POSTGRES_SCHEMA": settings.postgres_schema or "",
            "JIAYI_AUDIT_KEY_FILE": str(settings.data_dir.parent / "seal-key.pem"),
        }
        sealing.create_key(settings.data_dir.parent / "seal-key.pem")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo", "--patients", "40", "--seed", "3"]) == 0
    assert cli.main(["audit", "seal"]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == 0
    assert "OK: every event is as recorded" in capsys.readouterr().out
    db = Db(settings)
    try:
        state = bytearray(db.state(7))
        state[-2] ^= 0x20
        db.set_state(7, bytes(state))
    finally:
        db.close()
    assert cli.main(["audit", "verify", "--json"]) == 1
    out = capsys.readouterr().out
    assert '"kind": "changed"' in out and '"position": 7' in out


def test_rows_recorded_before_the_chain_existed_are_chained_once_at_upgrade(
    settings: Settings,
) -> None:
    """An existing deployment upgraded: the chain is started over the rows already stored
    (and says so); from then on the chain is never recomputed by the application."""
    app = build_application(settings)
    history.insert_records(app, history.read_records()[:10])
    app.close()
    store: ViewStore = sealing.open_store(settings)
    names = tables(store.postgres)
    store.execute(f"ALTER TABLE {names.events} DROP COLUMN digest")
    store.execute(f"ALTER TABLE {names.events} DROP COLUMN hash")
    store.close()
    build_application(settings).close()
    assert check(settings).ok and check(settings).events == 10

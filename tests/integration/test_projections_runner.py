"""Views built batch by batch equal views rebuilt from the log, also after a crash mid-batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification

from domain.application import CareCoordination
from jiayi.bootstrap import view_location
from jiayi.demo import generate
from jiayi.settings import Settings
from projections.base import Projection
from projections.events import LogReader
from projections.runner import Runner, rebuild, select
from projections.store import ViewStore
from tests.world import build_world

TODAY = date(2026, 5, 30)


def dump(store: ViewStore) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for p in select():
        for t in p.tables:
            rows = store.rows(f"SELECT {', '.join(t.names)} FROM {t.name}")
            out[t.name] = sorted((tuple(r.values()) for r in rows), key=repr)
    return out


@pytest.fixture
def history(app: CareCoordination) -> CareCoordination:
    generate(app, 150, seed=3, today=TODAY)
    return app


@pytest.fixture
def store(settings: Settings) -> Iterator[ViewStore]:
    s = view_location(settings).open()
    yield s
    s.close()


def test_rebuilt_views_equal_incrementally_built_ones(
    history: CareCoordination, store: ViewStore
) -> None:
    reader = LogReader(history)
    runner = Runner(store, reader)
    runner.catch_up(limit=97)  # odd batch size: batches cut through use cases
    assert runner.position() == history.max_position()
    incremental = dump(store)
    assert len(incremental["v_timeline"]) > 300
    summary = rebuild(store, reader)
    assert summary.position == history.max_position()
    assert dump(store) == incremental
    assert Runner(store, reader).run_once() == 0


class Crash(Exception):
    pass


def test_a_crash_mid_batch_loses_and_repeats_nothing(
    history: CareCoordination, settings: Settings, store: ViewStore
) -> None:
    reader = LogReader(history)
    crashing = Runner(view_location(settings).open(), reader)
    crashing.catch_up(limit=500)  # part of the way
    assert crashing.position() == history.max_position()
    # more history, then crashes: inside the fold, and after the rows were written but
    # before the transaction committed
    generate(history, 60, seed=4, today=TODAY)
    care: Projection = crashing.projections[2]
    original_apply = care.apply
    seen = 0

    def failing_apply(ev: Any, rows: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == 150:
            raise Crash("killed while folding")
        original_apply(ev, rows)

    care.apply = failing_apply  # type: ignore[method-assign]
    with pytest.raises(Crash):
        crashing.catch_up(limit=300)
    care.apply = original_apply  # type: ignore[method-assign]
    original_advance = crashing.store.advance

    def failing_advance(name: str, expected: int, position: int) -> bool:
        if name == "care":
            raise Crash("killed before commit")
        return original_advance(name, expected, position)

    crashing.store.advance = failing_advance  # type: ignore[method-assign]
    with pytest.raises(Crash):
        crashing.run_once(limit=300)
    crashing.store.close()
    # restart: a fresh runner carries on from the stored positions
    Runner(store, reader).catch_up(limit=300)
    after_crash = dump(store)
    rebuild(store, reader)
    assert dump(store) == after_crash


class _Tampered(LogReader):
    """The log as a runner reads it, one stored moment replaced (as if an older version of the
    domain had accepted it)."""

    def __init__(self, app: CareCoordination, old: bytes, new: bytes) -> None:
        super().__init__(app)
        self.old, self.new = old, new

    def page(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        return [
            replace(n, state=n.state.replace(self.old, self.new))
            for n in super().page(after, limit, stop)
        ]


def test_a_moment_outside_the_utc_range_is_projected_and_the_runner_carries_on(
    app: CareCoordination, store: ViewStore
) -> None:
    world = build_world(app)
    patient = world.patient()
    signed_at = datetime(2026, 5, 31, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    app.sign_contract(
        patient,
        team_id=world.team,
        package="basic",
        start=world.today,
        actor=world.gp,
        at=signed_at,
    )
    world.referral(patient)  # and something after it
    reader = _Tampered(
        app, signed_at.isoformat().encode(), b"0001-01-01T00:30:00+01:00"
    )  # 23:30 on 31 December of year 0 in UTC: not a datetime
    runner = Runner(store, reader)
    runner.catch_up(limit=5)
    assert runner.position() == app.max_position()
    signed = store.rows("SELECT at FROM v_timeline WHERE kind = 'contract.signed'")
    assert [r["at"] for r in signed] == ["0001-01-01T00:00:00.000000+00:00"]
    assert store.one("SELECT 1 AS x FROM v_timeline WHERE kind = 'referral.requested'")
    assert store.one("SELECT status FROM v_contracts") == {"status": "active"}


def test_following_the_log_opens_no_personal_data_and_patients_are_found_by_number(
    history: CareCoordination, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The views are built from the tokens as stored: decoding a page loads no patient's key
    (a rebuild of 1M events once spent most of its time there) and puts no index of a sealed
    national id in the views; that index was kept beside each patient's key when the patient
    was registered, and finds them."""
    from domain.patients import Patient
    from eventstore.keys import KeyRing
    from jiayi.bootstrap import keyring_of

    loads: list[int] = []
    load = KeyRing._load

    def counted(self: KeyRing, subjects: set[str]) -> None:
        loads.append(len(subjects))
        load(self, subjects)

    monkeypatch.setattr(KeyRing, "_load", counted)
    reader = LogReader(make_app())  # a new process: no key in memory yet
    page = reader.page(0, history.max_position())
    events = reader.decode(page)
    registered = [e for e in events if e.name == "Patient.Registered"]
    assert len(registered) >= 150
    assert loads == []
    assert all(e.data["national_id_index"] is None for e in registered)
    keyring = keyring_of(history)
    for e in registered[:20]:
        number = history.load(Patient, UUID(e.aggregate_id)).national_id
        assert e.aggregate_id in keyring.find(number.lower())  # found as typed, x or X


def test_the_mapper_preloads_the_keys_of_stored_events_in_one_go(
    history: CareCoordination, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding many stored events (a batch's aggregates, a page) after ``preload`` queries no
    key: the patients' keys, found in the tokens, came with one query."""
    from eventstore.keys import KeyRing
    from eventstore.mapper import PlacedMapper

    loads: list[set[str]] = []
    load = KeyRing._load

    def counted(self: KeyRing, subjects: set[str]) -> None:
        loads.append(set(subjects))
        load(self, subjects)

    monkeypatch.setattr(KeyRing, "_load", counted)
    app = make_app()  # a new process: no key in memory yet
    page = app.recorder.select_notifications(1, history.max_position())
    mapper = cast(PlacedMapper, app.mapper)
    mapper.preload(page)
    events = [mapper.to_domain_event(n) for n in page]
    patients = {e.originator_id.hex for e in events if type(e).__qualname__ == "Patient.Registered"}
    assert len(patients) >= 150
    assert loads == [patients]

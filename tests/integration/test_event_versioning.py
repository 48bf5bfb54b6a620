"""The worked example of changing an event: ``FollowUps.VisitRecorded`` version 2 renamed
``on`` to ``visited_on``, version 3 replaced ``obligation_id`` by ``obligation_ids``. The golden
records were stored by version 1 and stay so; they fold and rebuild as before only because the
upcasters run, in the repository and in the views.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from eventsourcing.cipher import AESCipher
from pydantic import SecretStr

from domain.common import Actor
from domain.followups import FollowUps
from jiayi.bootstrap import build_application, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import Runner
from tests.golden import history

VISITS = "domain.followups:FollowUps.VisitRecorded"


@pytest.fixture
def replay(settings: Settings) -> Iterator[history.Replay]:
    app = build_application(settings)
    store = view_location(settings).open()
    yield history.Replay(app, store)
    store.close()
    app.close()


def test_the_golden_visits_are_stored_by_version_1() -> None:
    visits = [r for r in history.read_records() if r["topic"] == VISITS]
    assert visits
    for r in visits:
        state = json.loads(r["state"])
        assert "on" in state and "visited_on" not in state and "class_version" not in state
        assert "obligation_id" in state and "obligation_ids" not in state
    assert FollowUps.VisitRecorded.class_version == 3


def test_with_the_upcaster_the_golden_checks_pass(replay: history.Replay) -> None:
    records = replay.insert()
    assert history.folded(replay.app, records) == history.expected_aggregates()
    assert replay.rebuilt_views() == history.expected_views()


def test_without_the_upcaster_the_golden_checks_fail(
    replay: history.Replay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 read as if it were current: the repository and the views both break."""
    monkeypatch.setattr(FollowUps.VisitRecorded, "class_version", 1)
    records = replay.insert()
    with pytest.raises(TypeError, match="visited_on"):
        history.folded(replay.app, records)
    with pytest.raises(KeyError, match="visited_on"):
        replay.rebuilt_views()


def test_new_visits_are_stored_by_version_3_and_read_beside_old_ones(
    replay: history.Replay,
) -> None:
    records = replay.insert()
    app = replay.app
    wang = history.gid("patient", "王秀英")
    followups = app.load(FollowUps, FollowUps.id_for(wang))
    last_visit = max(v["on"] for v in followups.visits.values())
    outcome = app.record_follow_up(
        patient_id=wang,
        on=last_visit + timedelta(days=1),
        kind="phone",
        actor=Actor("gp-1", followups.center_id),
        id=history.gid("visit", "version 2"),
    )
    stored = app.recorder.select_notifications(len(records), 10, inclusive_of_start=False)
    state = json.loads(next(n for n in stored if n.topic == VISITS).state)
    assert state["class_version"] == 3 and "visited_on" in state and "on" not in state
    assert "obligation_ids" in state and "obligation_id" not in state
    assert app.load(FollowUps, FollowUps.id_for(wang)).visits[outcome.id]["on"] == (
        last_visit + timedelta(days=1)
    )
    Runner(replay.store, LogReader(app)).catch_up()
    days = {
        r["id"]: r["on_date"] for r in replay.store.rows("SELECT id, on_date FROM v_visits", ())
    }
    assert days[outcome.id.hex] == (last_visit + timedelta(days=1)).isoformat()
    assert len(days) == 3  # the two version 1 visits of the golden history, and this one


def test_old_events_in_an_encrypted_store_are_upcast_after_decryption(settings: Settings) -> None:
    """Production encrypts stored events: the views decrypt, then upcast, as the library."""
    key = SecretStr(AESCipher.create_key(16))
    encrypted = settings.model_copy(update={"cipher_key": key})
    app = build_application(encrypted)
    store = view_location(encrypted).open()
    try:
        replay = history.Replay(app, store)
        records = replay.insert()
        assert app.mapper.cipher is not None
        first = app.recorder.select_notifications(0, 1)[0]
        assert records[0]["state"].encode() not in bytes(first.state)
        assert history.folded(app, records) == history.expected_aggregates()
        assert replay.rebuilt_views() == history.expected_views()
    finally:
        store.close()
        app.close()

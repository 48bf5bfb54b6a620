"""The golden history: events stored long ago still fold to the same aggregates and views.

``tests/golden/records.jsonl`` holds a history exactly as it was stored (topics, the stored
JSON of every event). It is inserted into a fresh store through the recorder, never through
the use cases, so these tests fail when a change to an event class, a parameter or a
projection would misread events already in a log. See "How to change an event" in
ARCHITECTURE.md; ``tests/golden/generate.py`` says when the expectations may be regenerated.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventsourcing import utils

from domain.patients import Patient
from jiayi.bootstrap import build_application, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import Runner
from tests.golden import history


@pytest.fixture
def replay(settings: Settings) -> Iterator[history.Replay]:
    """A fresh, empty store (SQLite, and real PostgreSQL) with its views."""
    app = build_application(settings)
    store = view_location(settings).open()
    yield history.Replay(app, store)
    store.close()
    app.close()


def test_the_golden_records_hold_every_event_class_of_the_domain() -> None:
    stored = {utils.resolve_topic(r["topic"]) for r in history.read_records()}
    missing = {e.__qualname__ for e in history.domain_event_classes()} - {
        e.__qualname__ for e in stored
    }
    assert not missing, f"add these events to the golden story: {sorted(missing)}"


def test_the_stored_records_fold_to_the_expected_aggregates(replay: history.Replay) -> None:
    records = replay.insert()
    assert replay.app.max_position() == len(records)
    assert history.folded(replay.app, records) == history.expected_aggregates()


def test_the_stored_records_rebuild_the_expected_views(replay: history.Replay) -> None:
    replay.insert()
    assert replay.rebuilt_views() == history.expected_views()


def test_views_followed_batch_by_batch_equal_the_expected_ones(replay: history.Replay) -> None:
    replay.insert()
    Runner(replay.store, LogReader(replay.app)).catch_up(limit=7)
    assert history.view_rows(replay.store) == history.expected_views()


def test_an_old_topic_registered_for_a_moved_class_reaches_the_same_handlers(
    replay: history.Replay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored as if ``Patient.Registered`` once lived elsewhere under another name."""
    old = "domain.registry:Resident.Enrolled"
    monkeypatch.setitem(utils._topic_cache, old, Patient.Registered)  # register_topic, undone
    records = [
        {**r, "topic": old} if r["topic"] == "domain.patients:Patient.Registered" else r
        for r in history.read_records()
    ]
    assert any(r["topic"] == old for r in records)
    replay.insert(records)
    assert history.folded(replay.app, records) == history.expected_aggregates()
    assert replay.rebuilt_views() == history.expected_views()

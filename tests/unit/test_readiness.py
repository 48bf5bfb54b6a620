"""When ``/ready`` calls the views stalled (:class:`api.readiness.ViewsWatch`): lacking an event
for longer than the bound without moving; never while they move or lack nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.readiness import ViewsWatch
from projections.queries import Following

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_views_lacking_an_old_event_are_stalled_from_the_first_look() -> None:
    watch = ViewsWatch(bound=30)
    found = Following(position=10, log_position=12, waiting_since=at(0))
    assert watch.stall(found, at(29)) is None
    stall = watch.stall(found, at(31))
    assert stall is not None and (stall.behind, round(stall.seconds)) == (2, 31)
    fresh = ViewsWatch(bound=30)  # another process, first look: the log says how long
    assert fresh.stall(found, at(45)) is not None


def test_views_that_move_are_following_however_far_behind() -> None:
    watch = ViewsWatch(bound=30)
    assert watch.stall(Following(10, 5000, waiting_since=at(0)), at(100)) is not None
    # a backlog worked through: the position moves between looks
    assert watch.stall(Following(2000, 5000, waiting_since=at(50)), at(105)) is None
    assert watch.stall(Following(4000, 5000, waiting_since=at(80)), at(110)) is None
    # then it stops moving: stalled once the bound has passed since it last moved
    assert watch.stall(Following(4000, 5000, waiting_since=at(80)), at(139)) is None
    assert watch.stall(Following(4000, 5000, waiting_since=at(80)), at(141)) is not None


def test_views_that_lack_nothing_are_never_stalled() -> None:
    watch = ViewsWatch(bound=1)
    assert watch.stall(Following(7, 7), at(0)) is None
    assert watch.stall(Following(7, 7), at(1000)) is None
    assert watch.stall(Following(7, 9, waiting_since=at(999)), at(1000)) is None

"""Projections name event classes that exist; every event class is read by a view or is
listed, with its reason, as ignored."""

from __future__ import annotations

import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic, resolve_topic

from domain.organisations import Organisation
from projections.base import Projection, Rows, handles
from projections.events import Ev, event_class
from projections.runner import PROJECTIONS
from tests.golden.history import domain_event_classes

#: Event classes no view reads, each with why.
IGNORED: dict[type[DomainEvent], str] = {
    # Departments are checked by the domain (referrals and quotas name one); no view lists them.
    event_class(Organisation, "DepartmentAdded"): "no view lists a hospital's departments",
}


def test_every_handler_names_an_event_class_declared_by_its_aggregate() -> None:
    for projection in PROJECTIONS:
        assert projection.handlers, projection.name
        for event_type, handler in projection.handlers.items():
            assert issubclass(event_type, DomainEvent)
            assert resolve_topic(get_topic(event_type)) is event_type
            assert event_type in domain_event_classes(), (projection.name, handler.__name__)


def test_every_event_class_is_handled_or_ignored_with_a_reason() -> None:
    handled = {e for p in PROJECTIONS for e in p.handlers}
    events = set(domain_event_classes())
    assert events, "no event classes found in domain/"
    unread = {e.__qualname__ for e in events - handled - set(IGNORED)}
    assert not unread, f"handle these in a projection or list them in IGNORED: {unread}"
    assert not handled & set(IGNORED), "an ignored event class is handled after all"
    assert all(reason for reason in IGNORED.values())


def test_a_name_that_is_no_event_class_fails_when_the_projection_is_defined() -> None:
    with pytest.raises(LookupError, match="Organisation declares no event 'Renamed'"):

        class Broken(Projection):
            @handles(Organisation, "Renamed")
            def renamed(self, ev: Ev, rows: Rows) -> None: ...


def test_one_projection_cannot_handle_an_event_twice() -> None:
    with pytest.raises(TypeError, match=r"handles Organisation\.Registered twice"):

        class Twice(Projection):
            @handles(Organisation, "Registered")
            def first(self, ev: Ev, rows: Rows) -> None: ...

            @handles(Organisation, "Registered")
            def second(self, ev: Ev, rows: Rows) -> None: ...

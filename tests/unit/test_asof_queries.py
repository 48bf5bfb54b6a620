"""Every query that reads views as of a moment holds the moment's replay while it reads."""

from __future__ import annotations

import inspect

from projections.views import ViewQueries


def test_every_query_taking_as_of_is_declared_replayed() -> None:
    """A query reading ``_db(as_of)`` without ``@replayed`` would read a store another
    process may delete meanwhile (and fails at once: no replay is held)."""
    taking = {
        name
        for name, method in inspect.getmembers(ViewQueries, inspect.isfunction)
        if not name.startswith("_") and "as_of" in inspect.signature(method).parameters
    }
    assert {"patient", "timeline", "referral", "team_workload", "kpis"} <= taking
    undeclared = [
        name
        for name in sorted(taking)
        if not getattr(
            inspect.unwrap(getattr(ViewQueries, name), stop=_replayed), "__replayed__", False
        )
    ]
    assert undeclared == []


def _replayed(function: object) -> bool:
    return bool(getattr(function, "__replayed__", False))

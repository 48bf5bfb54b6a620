"""The read access log's pieces without I/O: every query declares what it reads, rows are
counted per patient, every field is in the digest, uvicorn's access lines lose their query."""

from __future__ import annotations

import dataclasses
import inspect
import logging

from api.main import QuerylessAccessLog
from audit.access import AccessRecord, count_rows, record_digest
from projections.queries import Queries
from projections.views import ViewQueries


def test_every_query_taking_a_scope_declares_what_it_reads() -> None:
    """A new query method cannot forget the access log: it must say what it records (or,
    with ``reads(None)``, that it returns no patient's data)."""
    scoped = [
        name
        for name, member in inspect.getmembers(ViewQueries, inspect.isfunction)
        if not name.startswith("_") and list(inspect.signature(member).parameters)[1:2] == ["scope"]
    ]
    assert "timeline" in scoped and "search_patients" in scoped
    undeclared = [n for n in scoped if not hasattr(getattr(ViewQueries, n), "__reads__")]
    assert undeclared == []
    # and every scoped read of the interface is one of them
    interface = [
        name
        for name, member in inspect.getmembers(Queries, inspect.isfunction)
        if list(inspect.signature(member).parameters)[1:2] == ["scope"]
    ]
    assert sorted(interface) == sorted(scoped)
    recorded = {n: getattr(ViewQueries, n).__reads__ for n in scoped}
    assert recorded["timeline"] == "timeline" and recorded["kpis"] is None


def test_rows_are_counted_per_patient_in_lists_not_in_nested_items() -> None:
    a, b = "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "0b6f1c8e-5d2a-4c1e-9a37-2f5e8d9b4a10"
    worklist = {
        "returns": [{"patient_id": a}, {"patient_id": b}],
        "overdue": [{"patient_id": a}],
        "empty": [],
    }
    assert count_rows(worklist, "patient_id") == {a: 2, b: 1}
    entry = {"id": a, "contract": {"id": b}, "tags": ["hypertension"]}
    assert count_rows(entry, "id") == {a: 1}
    assert count_rows([], "patient_id") == {}
    assert count_rows({"slots": 3, "bookings": [{"patient_id": b}]}, "patient_id") == {b: 1}


def test_every_field_is_in_the_digest() -> None:
    record = AccessRecord(
        "2026-06-01T09:00:00.000000+00:00", "gp-1", None, "center_staff", "鼓楼区",
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "timeline", 3,
    )  # fmt: skip
    digest = record_digest(record)
    for f in dataclasses.fields(AccessRecord):
        value = getattr(record, f.name)
        changed = value + 1 if isinstance(value, int) else (value or "") + "x"
        assert record_digest(dataclasses.replace(record, **{f.name: changed})) != digest, f.name
    # none and empty are told apart; so are fields run together
    assert record_digest(dataclasses.replace(record, org_id="")) != digest
    moved = dataclasses.replace(record, staff_id="gp-1c", role="enter_staff")
    assert record_digest(moved) != digest


def test_access_log_lines_lose_their_query_string() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/patients?q=110105196001020030", "1.1", 405), None,
    )  # fmt: skip
    assert QuerylessAccessLog().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /patients HTTP/1.1" 405'
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "started", (), None)
    assert QuerylessAccessLog().filter(plain) and plain.getMessage() == "started"

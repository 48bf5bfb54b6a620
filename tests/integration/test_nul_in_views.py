"""A NUL stored in an event cannot stop the views (issue 15). PostgreSQL's ``text`` refuses
NUL: one such value (stored before the HTTP boundary refused control characters, or written
by another path) used to stop the projection runner for ever, and ``catch-up`` and
``rebuild`` with it. The views' decoder stores U+FFFD instead, on both stores alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.application import CareCoordination
from domain.common import Actor
from jiayi.bootstrap import build_projections, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.queries import Page, Reader, Scope
from projections.runner import Runner, rebuild, select
from projections.store import ViewStore
from tests.world import build_world


def dump(store: ViewStore) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for p in select():
        for t in p.tables:
            rows = store.rows(f"SELECT {', '.join(t.names)} FROM {t.name}")
            out[t.name] = sorted((tuple(r.values()) for r in rows), key=repr)
    return out


def test_an_event_holding_a_nul_is_projected_read_and_rebuilt(
    settings: Settings, make_app: Callable[[], CareCoordination]
) -> None:
    app = make_app()
    world = build_world(app)
    # written through the application, past the HTTP check: non-personal texts with a NUL
    team = app.form_team(world.center, name="团队\x00二", actor=world.center_admin).id
    desk = Actor("admin", world.hospital)
    app.add_department(world.hospital, code="neuro", name="神经\x00内科", actor=desk)
    app.form_team(world.center, name="团队三", actor=world.center_admin)  # and after it

    store = view_location(settings).open()
    try:
        reader = LogReader(app)
        runner = Runner(store, reader)
        runner.catch_up()
        assert runner.position() == app.max_position()  # nothing held the views back
        names = {r["name"] for r in store.rows("SELECT name FROM v_teams")}
        assert {"团队\ufffd二", "团队三"} <= names
        incremental = dump(store)
        assert "\x00" not in repr(incremental)

        views = build_projections(settings, app, run=False)
        try:
            nurse = Scope(
                org_id=world.center,
                org_kind="community_center",
                reader=Reader("nurse-1", "center_staff", world.center, "鼓楼区"),
            )
            teams = {t["id"]: t for t in views.queries.teams(nurse, Page())}
            assert teams[str(team)]["name"] == "团队\ufffd二"
        finally:
            views.close()

        summary = rebuild(store, reader)
        assert summary.position == app.max_position()
        assert dump(store) == incremental  # the same on a rebuild, on both stores
    finally:
        store.close()

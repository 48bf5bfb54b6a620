"""Views as of a moment within a budget: stores kept, builds at once, requests waiting.

Every distinct moment an auditor asks about is a whole rebuild of the views into a store of
its own. These stories ask for many moments at once and check that the stores left stay
within ``JIAYI_ASOF_MAX_STORES`` (the least recently used deleted), that a moment asked
for together, by one process or two, is built once, and that a pile of as-of requests never
holds the workers an ordinary read needs (excess ones answered 503 ``as-of-busy``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

import jiayi.bootstrap
from api.main import create_app
from api.tokens import Role
from domain.application import CareCoordination
from jiayi.bootstrap import build_projections, view_location
from jiayi.settings import Settings
from projections.events import LogReader, moment_text
from projections.queries import Scope
from projections.views import ViewQueries
from tests.conftest import Clock
from tests.e2e.server import Served, bearer
from tests.world import World

EVERYTHING = Scope(everything=True)


def replay_stores(settings: Settings) -> list[str]:
    """The replay stores that exist, read from where they live (not from jiayi)."""
    if settings.uses_postgres:
        with psycopg.connect(settings.postgres_dsn()) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                (f"{settings.postgres_schema}_asof_",),
            ).fetchall()
        return sorted(r[0] for r in rows)
    folder = settings.data_dir / "asof"
    return sorted(p.name for p in folder.glob("*.sqlite3")) if folder.is_dir() else []


def limited(settings: Settings, **budget: int) -> Settings:
    """``settings`` with ``JIAYI_ASOF_*`` values."""
    return Settings(
        data_dir=settings.data_dir,
        postgres_url=settings.postgres_url,
        postgres_schema=settings.postgres_schema,
        **{f"asof_{k}": v for k, v in budget.items()},
    )


@pytest.fixture
def built_here(monkeypatch: pytest.MonkeyPatch, app: CareCoordination) -> None:
    """Replays built in the test's process (a child process per build costs seconds of
    imports each; what is kept and when is decided the same way)."""

    def here(settings: Settings) -> Any:
        from projections.replays import in_process

        return in_process(LogReader(app))

    monkeypatch.setattr(jiayi.bootstrap, "ProcessBuilder", here, raising=False)


def past_moments(n: int) -> list[datetime]:
    """``n`` distinct moments (a millisecond apart) after what is recorded so far, all
    past when this returns."""
    time.sleep(0.01)
    first = datetime.now(UTC)
    time.sleep(0.01 + n / 1000)
    return [first + timedelta(milliseconds=k) for k in range(n)]


def status_as_of(q: Any, referral: Any, moment: datetime) -> str:
    found = q.referral(EVERYTHING, referral, as_of=moment)
    assert found is not None
    return str(found["status"])


@pytest.mark.usefixtures("built_here")
def test_twenty_moments_asked_together_leave_at_most_the_budgets_stores(
    settings: Settings, world: World, clock: Clock
) -> None:
    app = world.app
    referral = world.referral()
    moments = past_moments(20)  # (moments are of recording: the wall clock's)
    app.accept_referral(referral, actor=world.hospital_staff)
    views = build_projections(limited(settings, max_stores=4, builds=2, queue=18), app)
    try:
        q = views.queries
        assert q.wait_for(app.max_position())
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda m: status_as_of(q, referral, m), moments))
        assert answers == ["requested"] * 20
        assert status_as_of(q, referral, datetime.now(UTC)) == "accepted"
        assert len(replay_stores(settings)) <= 4
    finally:
        views.close()


@pytest.mark.usefixtures("built_here")
def test_the_least_recently_used_store_goes_and_one_asked_again_is_not_rebuilt(
    settings: Settings, world: World, clock: Clock
) -> None:
    app = world.app
    referral = world.referral()
    m1, m2, m3, m4 = past_moments(4)
    views = build_projections(limited(settings, max_stores=3), app)
    try:
        q = views.queries
        assert q.wait_for(app.max_position())
        for m in (m1, m2, m3):
            assert status_as_of(q, referral, m) == "requested"
        before = replay_stores(settings)
        assert len(before) == 3
        assert status_as_of(q, referral, m1) == "requested"  # used again: now the most recent
        assert replay_stores(settings) == before  # not rebuilt
        assert status_as_of(q, referral, m4) == "requested"
        after = replay_stores(settings)
        assert len(after) == 3
        kept = [name for name in before if name in after]
        gone = [name for name in before if name not in after]
        assert len(gone) == 1 and _stamp(m2) in gone[0]  # the least recently used
        assert any(_stamp(m1) in name for name in kept) and any(_stamp(m3) in n for n in kept)
    finally:
        views.close()


def _stamp(moment: datetime) -> str:
    """How a replay store's name spells its moment (UTC, down to the microsecond)."""
    text = moment_text(moment)
    return text.replace("-", "").replace(":", "").replace(".", "")[:21].lower()


class SlowReader:
    """The log reader, counting whole passes over the log (each one a build) and holding
    each pass at its start until ``go`` is set (so builds overlap, or wait)."""

    def __init__(self, reader: LogReader, go: threading.Event) -> None:
        self._reader = reader
        self.go = go
        self.passes = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def page(self, after: int, limit: int, *args: Any, **kwargs: Any) -> Any:
        if after == 0:
            with self._lock:
                self.passes += 1
            self.go.wait(30)
        return self._reader.page(after, limit, *args, **kwargs)


def test_a_moment_asked_together_by_two_processes_is_built_once(
    settings: Settings, world: World, clock: Clock
) -> None:
    app = world.app
    referral = world.referral()
    (moment,) = past_moments(1)
    views = build_projections(settings, app, run=False)
    views.close()
    go = threading.Event()
    reader = SlowReader(LogReader(app), go)
    location = view_location(settings)
    # two processes' worth of queries (nothing shared in memory), three requests each
    first, second = ViewQueries(location, reader), ViewQueries(location, reader)  # type: ignore[arg-type]
    try:
        with ThreadPoolExecutor(6) as pool:
            asked = [pool.submit(status_as_of, q, referral, moment) for q in [first, second] * 3]
            time.sleep(0.5)  # every request is in: one builds, the others wait for it
            go.set()
            assert [f.result(timeout=60) for f in asked] == ["requested"] * 6
        assert reader.passes == 1
    finally:
        go.set()
        first.close()
        second.close()


def test_as_of_requests_beyond_the_limit_are_refused_and_live_reads_stay_fast(
    settings: Settings, world: World, clock: Clock
) -> None:
    """20 as-of requests for distinct moments while builds are stuck: they never hold the
    workers an ordinary read needs (more than the limit: 503 as-of-busy at once)."""
    app = world.app
    patient = world.contracted_patient()
    referral = world.referral(patient)
    moments = past_moments(20)
    views = build_projections(settings, app)  # the live views, followed
    assert views.queries.wait_for(app.max_position())
    go = threading.Event()
    reader = SlowReader(LogReader(app), go)
    q = ViewQueries(view_location(settings), reader)  # type: ignore[arg-type]
    served = Served(create_app(settings, app=app, queries=q)).start()
    answers: list[httpx.Response] = []
    try:
        auditor = served.token(Role.AUDITOR)

        def as_of(moment: datetime) -> None:
            with httpx.Client(base_url=served.url, timeout=60) as http:
                answers.append(
                    http.get(
                        f"/referrals/{referral}",
                        params={"as_of": moment.isoformat()},
                        headers=bearer(auditor),
                    )
                )

        with ThreadPoolExecutor(20) as pool:
            for m in moments:
                pool.submit(as_of, m)
            deadline = time.monotonic() + 10
            while len(answers) < 15 and time.monotonic() < deadline:
                time.sleep(0.05)
            with httpx.Client(base_url=served.url, timeout=5) as http:
                began = time.perf_counter()
                live = http.get(f"/patients/{patient}/timeline", headers=bearer(auditor))
                took = time.perf_counter() - began
            assert live.status_code == 200
            assert took < 2.0  # a live read waits for no build (5 ms when idle)
            refused = list(answers)
            assert len(refused) == 15  # 1 building + 4 waiting; the other 15 at once
            assert {(r.status_code, r.json()["code"]) for r in refused} == {(503, "as-of-busy")}
            assert all(r.headers["retry-after"] == "5" for r in refused)
            go.set()
        assert sorted(r.status_code for r in answers) == [200] * 5 + [503] * 15
        assert q.replays.most_at_once == 1
        assert reader.passes == 5
    finally:
        go.set()
        served.stop()
        q.close()
        views.close()


def test_a_few_replays_stay_open_and_one_asked_again_is_reopened_not_replayed(
    settings: Settings, world: World
) -> None:
    """Each replay read through holds a connection: only the most recently used few stay
    open; one closed is reopened, not replayed, when asked for again."""
    app = world.app
    referral = world.referral()
    moments = past_moments(3)
    app.accept_referral(referral, actor=world.hospital_staff)
    go = threading.Event()
    go.set()
    reader = SlowReader(LogReader(app), go)
    q = ViewQueries(view_location(settings), reader, keep_replays=2)  # type: ignore[arg-type]
    try:
        assert [status_as_of(q, referral, m) for m in moments] == ["requested"] * 3
        assert reader.passes == 3
        assert len(q.replays._open) == 2
        assert status_as_of(q, referral, moments[0]) == "requested"
        assert reader.passes == 3
        assert len(q.replays._open) == 2
    finally:
        q.close()


def test_a_server_builds_in_a_child_process_and_jiayi_replay_reuses_its_store(
    settings: Settings, world: World
) -> None:
    """The server's replay is built by a child process (the serving one keeps its
    interpreter for live reads); ``jiayi replay`` finds it in the catalogue and reuses it."""
    from jiayi.replay_worker import settings_env

    app = world.app
    referral = world.referral()
    (moment,) = past_moments(1)
    app.accept_referral(referral, actor=world.hospital_staff)
    views = build_projections(settings, app)
    try:
        assert views.queries.wait_for(app.max_position())
        assert status_as_of(views.queries, referral, moment) == "requested"
        (built,) = replay_stores(settings)
        done = subprocess.run(
            [sys.executable, "-m", "jiayi.cli", "replay", "--as-of", moment.isoformat()],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert built in done.stdout
        assert replay_stores(settings) == [built]
    finally:
        views.close()


def test_a_replay_deleted_by_hand_is_built_again(settings: Settings, world: World) -> None:
    app = world.app
    referral = world.referral()
    (moment,) = past_moments(1)
    go = threading.Event()
    go.set()
    reader = SlowReader(LogReader(app), go)
    location = view_location(settings)
    first = ViewQueries(location, reader)  # type: ignore[arg-type]
    try:
        assert status_as_of(first, referral, moment) == "requested"
        (built,) = replay_stores(settings)
        first.replays.catalogue.drop([built])  # as an operator would, by hand
        second = ViewQueries(location, reader)  # type: ignore[arg-type]
        try:
            assert status_as_of(second, referral, moment) == "requested"
        finally:
            second.close()
        assert reader.passes == 2
        assert len(replay_stores(settings)) == 1
    finally:
        first.close()


def test_a_replay_built_by_an_older_version_is_built_again(
    settings: Settings, world: World
) -> None:
    """After an upgrade that changed a view's shape (issue 16 added columns), a replay store
    built before it would answer queries that name the new columns with an error: it is built
    again instead."""
    app = world.app
    referral = world.referral()
    (moment,) = past_moments(1)
    go = threading.Event()
    go.set()
    reader = SlowReader(LogReader(app), go)
    location = view_location(settings)
    first = ViewQueries(location, reader)  # type: ignore[arg-type]
    try:
        assert status_as_of(first, referral, moment) == "requested"
        (built,) = replay_stores(settings)
        old = location.replay(built).open()  # as an older version would have left it
        try:
            old.execute("UPDATE projection_shapes SET shape = 'older' WHERE name = 'care'")
        finally:
            old.close()
        second = ViewQueries(location, reader)  # type: ignore[arg-type]
        try:
            assert status_as_of(second, referral, moment) == "requested"
        finally:
            second.close()
        assert reader.passes == 2  # replayed again, not read from the old store
        assert len(replay_stores(settings)) == 1
    finally:
        first.close()

"""One projection runner works per event store; another stands by and takes over (issue 17).

Two ``jiayi projections run`` processes on the same store (SQLite: a lock file beside it;
PostgreSQL: an advisory lock): one leads and folds the log, the other stands by and touches
nothing (with the leader frozen by SIGSTOP, the views do not move); the leader is SIGKILLed, the standby takes over within a bound, the views catch up
and equal a rebuild from the log (nothing applied twice, nothing lost).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domain.application import CareCoordination
from jiayi.bootstrap import PROJECTIONS_DUTY, build_application, build_duty, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import Runner, RunnerThread, rebuild
from runtime.leadership import PostgresLeadership
from tests.golden.history import view_rows
from tests.world import World, build_world

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a standby may take to notice the leader is gone and catch the views up.
TAKEOVER = 20.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_POSTGRES_URL=settings.postgres_dsn() if settings.uses_postgres else "",
        JIAYI_POSTGRES_SCHEMA=settings.postgres_schema or "",
        JIAYI_DATA_DIR=str(settings.data_dir),
        JIAYI_MASTER_KEY_FILE=str(settings.master_key_path),
        JIAYI_LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    return env


@dataclass
class RunnerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def records(self) -> list[dict[str, Any]]:
        """Every line it wrote, each a JSON object (JIAYI_LOG_FORMAT=json)."""
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def said(self, start: str) -> bool:
        return any(str(r.get("message", "")).startswith(start) for r in self.records())


def start_runner(settings: Settings, log: Path) -> RunnerProcess:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jiayi.cli", "projections", "run", "--poll", "0.05"],
            env=env_for(settings),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return RunnerProcess(process, log)


def view_position(settings: Settings) -> int:
    store = view_location(settings).open()
    try:
        return min(store.positions().values(), default=0)
    finally:
        store.close()


def more_patients(world: World, first: int, count: int) -> None:
    for serial in range(first, first + count):
        world.patient(serial=serial)


@pytest.fixture
def app(settings: Settings) -> Iterator[CareCoordination]:
    found = build_application(settings)
    yield found
    found.close()


def test_one_runner_leads_the_other_stands_by_and_takes_over_when_it_is_killed(
    settings: Settings, app: CareCoordination, tmp_path: Path
) -> None:
    world = build_world(app)
    more_patients(world, 200, 5)
    first = start_runner(settings, tmp_path / "first.log")
    runners = [first]
    try:
        wait_for(lambda: first.said("leader of projections"), 60, "the first runner to lead")
        second = start_runner(settings, tmp_path / "second.log")
        runners.append(second)
        wait_for(lambda: second.said("standing by for projections"), 60, "the second to stand by")
        wait_for(lambda: view_position(settings) == app.max_position(), 60, "the views")
        more_patients(world, 300, 3)
        wait_for(lambda: view_position(settings) == app.max_position(), 60, "the views again")
        # the leader frozen (its lock still held): nobody else moves the views
        first.process.send_signal(signal.SIGSTOP)
        frozen_at = view_position(settings)
        more_patients(world, 400, 4)
        time.sleep(2.5)  # the standby had more than one look at the lock meanwhile
        assert view_position(settings) == frozen_at < app.max_position(), "the standby worked"
        assert not second.said("leader of"), "the standby led while the leader lived"
        assert second.process.poll() is None

        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        killed = time.monotonic()
        more_patients(world, 500, 2)
        wait_for(lambda: second.said("leader of projections"), TAKEOVER, "the standby to lead")
        wait_for(
            lambda: view_position(settings) == app.max_position(),
            TAKEOVER - (time.monotonic() - killed),
            "the views after the take-over",
        )
        # every line either process wrote is one JSON object naming the duty it is about
        roles = [r for p in runners for r in p.records() if r.get("logger") == "runtime.leadership"]
        assert roles and all(r["duty"] == "projections" for r in roles)
    finally:
        for r in runners:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
                try:
                    r.process.wait(20)
                except subprocess.TimeoutExpired:
                    r.process.kill()
    assert second.process.returncode == 0, second.log.read_text()
    assert second.said("released the leadership of projections")  # a clean stop lets it go
    # nothing applied twice or lost: the views followed by two runners equal a rebuild
    store = view_location(settings).open()
    try:
        followed = view_rows(store)
        rebuild(store, LogReader(app), pace_gc=False)
        assert view_rows(store) == followed
    finally:
        store.close()


@pytest.mark.postgres
def test_a_runner_whose_lock_connection_drops_stops_at_once_and_the_standby_takes_over(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    settings = postgres_settings
    app = build_application(settings)
    world = build_world(app)
    location = view_location(settings)
    store = location.open()
    Runner(store, LogReader(app))  # the views' tables, before two runners race to make them
    store.close()
    changes: list[list[bool]] = [[], []]
    duties = [build_duty(settings, PROJECTIONS_DUTY, on_change=changes[i].append) for i in range(2)]
    # the first, once it lost the lock, looks again later than the standby does
    runners = [
        RunnerThread(location.open, LogReader(app), poll=0.02, leadership=d, standby_poll=wait)
        for d, wait in zip(duties, (3.0, 0.2), strict=True)
    ]
    try:
        runners[0].start()
        wait_for(lambda: duties[0].held is True, 20, "the first runner to lead")
        runners[1].start()
        wait_for(lambda: duties[1].held is False, 20, "the second to stand by")
        wait_for(lambda: view_position(settings) == app.max_position(), 30, "the views")
        lock = duties[0].lock
        assert isinstance(lock, PostgresLeadership) and lock.conn is not None
        with psycopg.connect(settings.postgres_dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lock.conn.info.backend_pid,))
        more_patients(world, 700, 3)  # work for whoever leads now
        wait_for(lambda: duties[1].held is True, 20, "the standby to take over")
        applied = runners[0].batches
        wait_for(lambda: view_position(settings) == app.max_position(), 30, "the views again")
        more_patients(world, 800, 2)
        wait_for(lambda: view_position(settings) == app.max_position(), 30, "and again")
        assert runners[0].batches == applied, "the runner that lost its lock kept working"
        assert duties[0].held is False
        # the metrics hook heard each change: led, lost; stood by, led
        assert changes == [[True, False], [False, True]]
    finally:
        stops = [threading.Thread(target=r.stop) for r in runners]
        for t in stops:
            t.start()
        for t in stops:
            t.join()
        app.close()

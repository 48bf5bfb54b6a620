"""``jiayi serve --demo-patients N`` on PostgreSQL (issue 15: it was silently ignored there).
Asked for, the demo city is built when the store is empty, once even when processes start
together; not asked for, a PostgreSQL store (a real deployment's) gets none and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from jiayi.bootstrap import build_application
from jiayi.commands.serve import demo_if_empty
from jiayi.demo import DemoSummary
from jiayi.settings import Settings
from tests.e2e.server import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = ("--demo-patients", "20", "--seed", "3")


def test_serve_builds_the_demo_city_it_is_asked_for_on_postgresql(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_POSTGRES_URL=postgres_settings.postgres_dsn(),
        JIAYI_POSTGRES_SCHEMA=postgres_settings.postgres_schema or "",
        JIAYI_DATA_DIR=str(postgres_settings.data_dir),
        JIAYI_MASTER_KEY_FILE=str(postgres_settings.master_key_path),
        PYTHONUNBUFFERED="1",
    )
    out = tmp_path / "serve.stdout"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "jiayi.cli", "serve", "--port", str(port), *DEMO],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, out.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    printed = out.read_text()
    assert "empty store: building a demo city of 20 residents" in printed, printed
    app = build_application(postgres_settings)
    try:
        assert app.max_position() > 100  # the city, in the PostgreSQL schema
    finally:
        app.close()


def test_processes_started_together_build_the_demo_once(postgres_settings: Settings) -> None:
    apps = [build_application(postgres_settings) for _ in range(3)]
    built: list[DemoSummary | None] = []
    start = threading.Barrier(len(apps))

    def serve_start(index: int) -> None:
        start.wait()
        built.append(demo_if_empty(postgres_settings, apps[index], 15, seed=5))

    threads = [threading.Thread(target=serve_start, args=(i,)) for i in range(len(apps))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        summaries = [s for s in built if s is not None]
        assert len(built) == 3 and len(summaries) == 1
        assert apps[0].max_position() == summaries[0].events  # one city, not three
    finally:
        for app in apps:
            app.close()


@pytest.mark.parametrize("asked", [None, 0])
def test_a_postgresql_store_gets_no_demo_unless_asked_and_says_so(
    postgres_settings: Settings, asked: int | None, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build_application(postgres_settings)
    try:
        assert demo_if_empty(postgres_settings, app, asked, seed=5) is None
        assert app.max_position() == 0
        printed = capsys.readouterr().out
        if asked is None:
            assert "no demo city (ask for one: --demo-patients N)" in printed
    finally:
        app.close()

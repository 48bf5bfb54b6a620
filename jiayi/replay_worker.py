"""Views as of a moment, built in a process of their own (``python -m jiayi.replay_worker``).

A replay is a whole rebuild of the views: CPU-bound Python for seconds, minutes on millions of
events. Inside the serving process it would hold the interpreter's lock against every live
read (each read waits for it at every step: measured 1.6 s instead of 5 ms with builds
running), and its memory would stay with the server. So ``jiayi serve`` builds each replay in
a child process (:class:`ProcessBuilder`, on CPU time nothing else wants, killed with its
parent) and
its request thread only waits for it; :mod:`projections.replays` decides when and how many.

The child gets the parent's settings as ``JIAYI_*`` variables, the moment and the store's
name as arguments; it answers with its exit status and, on failure, one JSON line on stdout
(a damaged event's place, or the database being unavailable), never the events' content.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from typing import Any
from uuid import UUID

from pydantic import SecretStr

from eventstore.errors import DamagedEvent
from jiayi.settings import ENV_PREFIX, Settings, variable
from projections.location import Location

#: Exit statuses of the child.
DAMAGED, UNAVAILABLE = 3, 4
#: The child's CPU priority (``nice``) where ``SCHED_IDLE`` is not available.
NICENESS = 19


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process with exactly ``settings`` (this process's own
    ``JIAYI_*`` variables replaced)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for name in Settings.model_fields:
        value: Any = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[variable(name)] = str(value)
    return env


class ProcessBuilder:
    """A :data:`projections.replays.Builder` running each build in a child process."""

    def __init__(self, settings: Settings) -> None:
        self.env = settings_env(settings)
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def __call__(self, moment: str, place: Location) -> None:
        name = place.schema if place.postgres_params is not None else place.sqlite_path
        assert name is not None
        child = subprocess.Popen(
            [sys.executable, "-m", "jiayi.replay_worker", moment, os.path.basename(str(name))],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with self._lock:
            self._children.add(child)
        try:
            out, err = child.communicate()
        finally:
            with self._lock:
                self._children.discard(child)
        if child.returncode == 0:
            return
        answer: dict[str, Any] = {}
        with contextlib.suppress(ValueError, IndexError):
            answer = json.loads(out.decode().strip().splitlines()[-1])
        if "damaged" in answer:
            d = answer["damaged"]
            raise DamagedEvent(
                originator_id=UUID(d["originator_id"]),
                version=int(d["version"]),
                topic=str(d["topic"]),
                reason=str(d["reason"]),
                position=d.get("position"),
            )
        if "unavailable" in answer:
            raise ConnectionError(f"the database is unavailable: {answer['unavailable']}")
        last = (err.decode(errors="replace").strip().splitlines() or [""])[-1][:300]
        raise RuntimeError(f"building the views as of {moment} failed ({child.returncode}): {last}")

    def close(self) -> None:
        """Stops the builds still running (their claims lapse; another process takes over)."""
        with self._lock:
            children = list(self._children)
        for child in children:
            with contextlib.suppress(OSError):
                child.kill()


def _background() -> None:
    """This process runs only on CPU time nothing else wants (Linux ``SCHED_IDLE``), else at
    the lowest priority: the server's live reads come first."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(NICENESS)


def _die_with_parent() -> None:
    """Linux: this process is killed when the thread that started it ends (its server died),
    instead of building on for nobody."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def main(argv: list[str]) -> int:
    moment, name = argv
    _background()
    _die_with_parent()
    import psycopg

    from jiayi.bootstrap import build_application, view_location
    from projections.events import LogReader
    from projections.runner import rebuild

    settings = Settings()
    try:
        app = build_application(settings)
        try:
            store = view_location(settings).replay(name).open()
            try:
                rebuild(store, LogReader(app), as_of=moment)
            finally:
                store.close()
        finally:
            app.close()
    except DamagedEvent as exc:
        found = {
            "originator_id": str(exc.originator_id),
            "version": exc.version,
            "topic": exc.topic,
            "reason": exc.reason,
            "position": exc.position,
        }
        print(json.dumps({"damaged": found}))
        return DAMAGED
    except (psycopg.OperationalError, sqlite3.OperationalError, ConnectionError) as exc:
        print(json.dumps({"unavailable": type(exc).__name__}))
        return UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The one logging setup (JSON lines, request ids) and the duty's reports of leadership
changes (issue 17); the request id in a stored actor, and the old stored form unchanged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from uuid import UUID

import anyio
import pytest
from anyio import to_thread

from domain.common import Actor, ActorAsDict, OrjsonTranscoder
from runtime import logs
from runtime.leadership import Duty, lock_file_name


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    kept, level = list(root.handlers), root.level
    out = io.StringIO()
    logs.configure("json", stream=out)
    yield out
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in kept:
        root.addHandler(h)
    root.setLevel(level)
    logs._configured = None


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_context_and_the_exception_as_one_field(
    stream: io.StringIO,
) -> None:
    log = logging.getLogger("jiayi.test")
    log.info("applied %d events", 3, extra={"duty": "projections"})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed")
    first, second = records(stream)
    assert first["level"] == "INFO" and first["logger"] == "jiayi.test"
    assert first["message"] == "applied 3 events" and first["duty"] == "projections"
    assert str(first["time"]).endswith("Z") and "T" in str(first["time"])
    assert "request_id" not in first  # outside a request
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in str(second["exception"])
    assert len(stream.getvalue().splitlines()) == 2  # the traceback inside its line


def test_every_line_written_while_a_request_is_handled_carries_its_id_in_worker_threads_too(
    stream: io.StringIO,
) -> None:
    log = logging.getLogger("jiayi.test")

    async def request() -> None:
        token = logs.request_id.set("req-42")
        try:
            log.info("in the request")
            await to_thread.run_sync(lambda: log.info("in a route's worker thread"))
        finally:
            logs.request_id.reset(token)
        log.info("after")

    anyio.run(request)
    inside, worker, after = records(stream)
    assert inside["request_id"] == worker["request_id"] == "req-42"
    assert "request_id" not in after


def test_the_operator_lines_of_a_command_are_records_with_json_logs(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.announce("following the log")
    assert capsys.readouterr().out == ""
    assert records(stream)[0]["message"] == "following the log"


class FakeLock:
    def __init__(self) -> None:
        self.free = True
        self.mine = False
        self.reason: str | None = None

    def hold(self) -> bool:
        if not self.mine and self.free:
            self.mine, self.free = True, False
        return self.mine

    def release(self) -> None:
        if self.mine:
            self.mine, self.free = False, True


def test_a_duty_reports_each_change_of_leadership_once(stream: io.StringIO) -> None:
    lock = FakeLock()
    lock.free = False  # another process holds it
    changes: list[bool] = []
    duty = Duty("projections", lock, on_change=changes.append)
    assert not duty.hold() and not duty.hold()
    lock.free = True  # the other one died
    assert duty.hold() and duty.hold()
    lock.mine, lock.reason = False, "terminating connection due to administrator command"
    assert not duty.hold()
    lock.free = True
    assert duty.hold()
    duty.release()
    duty.release()
    assert changes == [False, True, False, True, False]
    messages = [r["message"] for r in records(stream)]
    assert messages == [
        "standing by for projections: another process holds it",
        "leader of projections",
        "lost the leadership of projections: terminating connection due to administrator "
        "command; stopped, standing by",
        "leader of projections",
        "released the leadership of projections",
    ]
    assert all(r["duty"] == "projections" for r in records(stream))


def test_lock_files_keep_the_relays_name_and_name_other_duties_alike() -> None:
    assert lock_file_name("kafka-relay:jiayi.partner.") == "kafka-relay.jiayi.partner.lock"
    assert lock_file_name("projections") == "projections.lock"


def test_an_actor_without_a_request_id_is_stored_as_before_and_old_ones_load() -> None:
    transcoder = OrjsonTranscoder()
    transcoder.register(ActorAsDict())
    org = UUID(int=7)
    old = b'{"_type_":"actor","_data_":{"staff_id":"gp-1","org_id":"' + org.hex.encode() + b'"}}'
    assert transcoder.decode(old) == Actor("gp-1", org)
    assert transcoder.encode(Actor("gp-1", org)) == transcoder.encode(transcoder.decode(old))
    with_id = Actor("gp-1", org, request_id="req-1")
    assert transcoder.decode(transcoder.encode(with_id)) == with_id

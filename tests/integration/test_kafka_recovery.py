"""Crashes and outages: a consumer killed mid-run, a broker restarted under a running exchange."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from consumers.messages import partner_event
from consumers.outbound import Relay
from consumers.topics import inbound_topic
from jiayi.bootstrap import (
    build_application,
    build_inbound_consumer,
    build_relay,
    ensure_topics,
)
from jiayi.settings import Settings
from tests.kafka_helpers import (
    admin_credentials,
    as_json,
    count_events,
    exchange_settings,
    free_ports,
    partners,
    read_all,
    send_inbound,
)
from tests.world import World, build_world

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
FOLLOWUP = "cn.jiayi.partner.followup.recorded.v2"
VISITS = "FollowUps.VisitRecorded"


def followups(world: World, patients: list[UUID], n: int, prefix: str) -> list[tuple[bytes, bytes]]:
    day = world.today.isoformat()
    out = []
    for i in range(n):
        p = patients[i % len(patients)]
        data = {"patient_id": str(p), "on": day, "kind": "phone", "note": f"visit {i}"}
        out.append((str(p).encode(), partner_event(FOLLOWUP, world.center, f"{prefix}-{i}", data)))
    return out


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def child_postgres_url(settings: Settings) -> str:
    """``JIAYI_POSTGRES_URL`` for a child process (empty: SQLite)."""
    return settings.postgres_dsn() if settings.uses_postgres else ""


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_POSTGRES_URL=child_postgres_url(settings),
        JIAYI_POSTGRES_SCHEMA=settings.postgres_schema or "",
        JIAYI_DATA_DIR=str(settings.data_dir),
        JIAYI_MASTER_KEY_FILE=str(settings.master_key_path),
        JIAYI_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        JIAYI_PARTNER_TOPIC_PREFIX=settings.partner_topic_prefix,
        JIAYI_PLATFORM_TOPIC=settings.platform_topic or "",
        JIAYI_DEAD_LETTER_TOPIC=settings.dead_letter_topic,
        JIAYI_CONSUMER_GROUP=settings.consumer_group,
        JIAYI_KAFKA_BATCH="200",
        JIAYI_KAFKA_SECURITY_PROTOCOL=settings.kafka_security_protocol,
        JIAYI_KAFKA_USERNAME=settings.kafka_username or "",
        JIAYI_KAFKA_PASSWORD=(
            settings.kafka_password.get_secret_value() if settings.kafka_password else ""
        ),
        PYTHONPATH=str(ROOT),
    )
    return env


def test_a_consumer_killed_mid_run_and_restarted_applies_each_message_exactly_once(
    postgres_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = exchange_settings(postgres_settings, kafka_bootstrap)
    ensure_topics(settings)
    app = build_application(settings)
    world = build_world(app)
    ensure_topics(settings, partners(world))
    patients = [world.patient(serial=i) for i in range(20)]
    n = 12_000
    send_inbound(settings, followups(world, patients, n, "kill"))
    url, schema = child_postgres_url(settings), settings.postgres_schema or ""
    cmd = [sys.executable, "-m", "jiayi.cli", "consume"]

    log = (tmp_path / "consume-1.log").open("w")
    first = subprocess.Popen(cmd, env=env_for(settings), cwd=ROOT, stdout=log, stderr=log)
    wait_for(lambda: count_events(url, schema, VISITS) >= 1000, 120, "the first applied batches")
    first.send_signal(signal.SIGKILL)
    first.wait()
    applied_before_kill = count_events(url, schema, VISITS)
    assert applied_before_kill < n, "killed too late to be mid-run"

    log = (tmp_path / "consume-2.log").open("w")
    second = subprocess.run(
        [*cmd, "--idle-exit", "4"],
        env=env_for(settings),
        cwd=ROOT,
        stdout=log,
        stderr=log,
        timeout=240,
    )
    assert second.returncode == 0, (tmp_path / "consume-2.log").read_text()[-2000:]

    assert count_events(url, schema, VISITS) == n
    visits = sum(
        len(app.load(__import__("domain.followups").followups.FollowUps, f).visits)
        for f in {__import__("domain.followups").followups.FollowUps.id_for(p) for p in patients}
    )
    assert visits == n
    inbound = build_inbound_consumer(settings, app=app)
    offsets = 0
    for partition in range(settings.kafka_partitions):
        from kafka import TopicPartition

        topic = inbound_topic(settings.partner_topic_prefix, world.center)
        offsets += inbound.stored(TopicPartition(topic, partition)) or 0
    inbound.consumer.close()
    assert offsets == n
    app.close()


def test_two_members_sharing_the_partitions_one_killed_apply_each_message_exactly_once(
    postgres_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The deployment runs several ``jiayi consume`` members: a second one joins (the group
    splits the partitions), both write, then the first dies mid-run and the second takes its
    partitions over from the offsets stored with the events."""
    settings = exchange_settings(postgres_settings, kafka_bootstrap, partitions=4)
    ensure_topics(settings)
    app = build_application(settings)
    world = build_world(app)
    ensure_topics(settings, partners(world))
    patients = [world.patient(serial=i) for i in range(40)]
    url, schema = child_postgres_url(settings), settings.postgres_schema or ""
    cmd = [sys.executable, "-m", "jiayi.cli", "consume"]
    messages = followups(world, patients, 10_000, "pair")
    logs = [tmp_path / f"member-{i}.log" for i in (1, 2)]

    def assigned(log: Path) -> list[str]:
        lines = [ln for ln in log.read_text().splitlines() if "consumers.inbound assigned" in ln]
        return lines[-1].split("assigned ", 1)[1].strip("[]").split(", ") if lines else []

    send_inbound(settings, messages[:2000])
    out = logs[0].open("w")
    first = subprocess.Popen(cmd, env=env_for(settings), cwd=ROOT, stdout=out, stderr=out)
    wait_for(lambda: count_events(url, schema, VISITS) == 2000, 120, "the first member alone")
    out = logs[1].open("w")
    second = subprocess.Popen(
        [*cmd, "--idle-exit", "20"], env=env_for(settings), cwd=ROOT, stdout=out, stderr=out
    )
    # every partner's inbound topic (4 partitions each), split between the two members
    parts = 4 * len(partners(world))
    split = parts // 2
    wait_for(lambda: len(assigned(logs[1])) == split == len(assigned(logs[0])), 120, "a split")

    send_inbound(settings, messages[2000:])
    wait_for(lambda: count_events(url, schema, VISITS) >= 4000, 120, "both members' batches")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert count_events(url, schema, VISITS) < len(messages), "killed too late to be mid-run"
    assert second.wait(timeout=240) == 0, logs[1].read_text()[-2000:]
    assert len(assigned(logs[1])) == parts  # it took the dead member's partitions over

    from domain.followups import FollowUps

    per_patient = [len(app.load(FollowUps, FollowUps.id_for(p)).visits) for p in patients]
    assert per_patient == [len(messages) // len(patients)] * len(patients)
    assert count_events(url, schema, VISITS) == len(messages)
    assert read_all(kafka_bootstrap, settings.dead_letter_topic, 0, timeout=3) == []
    app.close()


# --- a broker of our own, restarted under a running consumer and relay ----------------------


@pytest.fixture
def own_broker(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[dict[str, str]]:
    port, controller, broker = free_ports(3)
    env = dict(
        os.environ,
        JIAYI_KAFKA_PORT=str(port),
        JIAYI_KAFKA_CONTROLLER_PORT=str(controller),
        JIAYI_KAFKA_BROKER_PORT=str(broker),
        JIAYI_KAFKA_DIR=str(tmp_path_factory.mktemp("kafka-restart")),
        JIAYI_KAFKA_HEAP="512m",
    )
    subprocess.run([ROOT / "infra/kafka/ensure.sh"], env=env, check=True, stdout=subprocess.DEVNULL)
    yield env
    subprocess.run([ROOT / "infra/kafka/stop.sh"], env=env, check=False)


def test_consumer_and_relay_resume_by_themselves_after_the_broker_restarts(
    postgres_settings: Settings, own_broker: dict[str, str]
) -> None:
    bootstrap = f"127.0.0.1:{own_broker['JIAYI_KAFKA_PORT']}"
    credentials = admin_credentials(Path(own_broker["JIAYI_KAFKA_DIR"]))
    settings = exchange_settings(postgres_settings, bootstrap, credentials=credentials)
    ensure_topics(settings)
    app = build_application(settings)
    world = build_world(app)
    ensure_topics(settings, partners(world))
    patients = [world.patient(serial=i) for i in range(10)]
    url, schema = child_postgres_url(settings), settings.postgres_schema or ""
    inbound = build_inbound_consumer(settings, app=build_application(settings))
    relay = build_relay(settings, app=build_application(settings))
    stop = threading.Event()
    threads = [
        threading.Thread(target=inbound.run, args=(stop,), daemon=True),
        threading.Thread(target=relay.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        send_inbound(settings, followups(world, patients, 300, "before"))
        wait_for(lambda: count_events(url, schema, VISITS) == 300, 90, "messages before")

        subprocess.run([ROOT / "infra/kafka/stop.sh"], env=own_broker, check=True)
        for i in range(3):  # the application goes on writing while the broker is away
            world.patient(serial=100 + i)
        time.sleep(2)
        subprocess.run(
            [ROOT / "infra/kafka/ensure.sh"], env=own_broker, check=True, stdout=subprocess.DEVNULL
        )

        send_inbound(settings, followups(world, patients, 300, "after"))
        wait_for(lambda: count_events(url, schema, VISITS) == 600, 120, "messages after")
        wait_for(lambda: relay.position() >= app.max_position(), 120, "the relay to catch up")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert all(not t.is_alive() for t in threads)

    expected = [n.id for n in app.recorder.select_notifications(start=1, limit=1_000_000)]
    records = read_all(settings, settings.platform_topic or "", len(expected), timeout=60)
    seen = [int(as_json(r)["sequence"]) for r in records]
    assert set(seen) == set(expected)  # nothing skipped
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in records:
        by_key[r.key].append(int(as_json(r)["sequence"]))
    for positions in by_key.values():  # duplicates possible, reordering not
        firsts = list(dict.fromkeys(positions))
        assert firsts == sorted(firsts)
    inbound.consumer.close()
    for a in (app, inbound.app, relay.app):
        a.close()


def test_the_relay_restarted_after_an_unacknowledged_page_neither_skips_nor_reorders(
    postgres_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = exchange_settings(postgres_settings, kafka_bootstrap)
    ensure_topics(settings)
    app = build_application(settings)
    world = build_world(app)
    ensure_topics(settings, partners(world))
    for i in range(5):
        world.contracted_patient(serial=i)

    relay = build_relay(settings, app=app)
    relay.page = 7
    relay.publish_once()
    relay.publish_once()
    stored = relay.position()

    class CrashBeforeStoring(Exception):
        pass

    def crash(*_: object) -> None:
        raise CrashBeforeStoring  # sent and acknowledged, but the position is not stored

    relay.recorder.insert_tracking = crash  # type: ignore[method-assign]
    with pytest.raises(CrashBeforeStoring):
        relay.publish_once()
    del relay.recorder.insert_tracking  # type: ignore[attr-defined]
    relay.close()
    assert build_relay(settings, app=app).position() == stored

    restarted: Relay = build_relay(settings, app=app)
    while restarted.publish_once():
        pass
    restarted.close()

    expected = [n.id for n in app.recorder.select_notifications(start=1, limit=100_000)]
    records = read_all(kafka_bootstrap, settings.platform_topic or "", len(expected) + 7)
    positions = [int(as_json(r)["sequence"]) for r in records]
    assert set(positions) == set(expected)
    assert len(positions) == len(expected) + 7  # one page sent twice, nothing else
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in records:
        by_key[r.key].append(int(as_json(r)["sequence"]))
    for seq in by_key.values():
        assert list(dict.fromkeys(seq)) == sorted(set(seq))
    app.close()

"""Issue 17, metrics of ``jiayi consume`` on a real broker (SQLite and PostgreSQL): an operator
reading the consumer's metrics port after a run finds messages applied, duplicates skipped and
dead letters by code moved by exactly what was sent, the batches' sizes adding up to it, and
the partition's lag, behind while messages wait, back at zero once they are handled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.inbound import InboundConsumer
from consumers.messages import partner_event
from consumers.topics import inbound_topic
from domain.application import CareCoordination
from domain.followups import FollowUps
from jiayi import metrics
from jiayi.bootstrap import build_inbound_consumer, ensure_topics
from jiayi.settings import Settings
from tests.e2e.server import free_port
from tests.kafka_helpers import exchange_settings, partners, send_inbound
from tests.world import World, build_world

pytestmark = pytest.mark.kafka

FOLLOWUP = "cn.jiayi.partner.followup.recorded.v2"
Labels = frozenset[tuple[str, str]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Settings:
    store = "sqlite_settings" if request.param == "sqlite" else "postgres_settings"
    base: Settings = request.getfixturevalue(store)
    return exchange_settings(base, kafka_bootstrap, partitions=1).model_copy(
        update={"metrics_port": free_port()}
    )


@pytest.fixture
def port(settings: Settings) -> Iterator[int]:
    served = metrics.serve(settings)
    assert served is not None
    yield served.port
    served.stop()


@pytest.fixture
def world(settings: Settings, app: CareCoordination) -> World:
    world = build_world(app)
    ensure_topics(settings, partners(world))
    return world


@pytest.fixture
def inbound(settings: Settings, app: CareCoordination, world: World) -> Iterator[InboundConsumer]:
    consumer = build_inbound_consumer(settings, app=app)
    yield consumer
    consumer.consumer.close()
    consumer.dead_letters.close()


def scrape(port: int) -> dict[str, dict[Labels, float]]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def value(found: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    return found.get(name, {}).get(frozenset(labels.items()), 0.0)


def visit(world: World, patient: UUID, id: str, **data: Any) -> bytes:
    fields = {"patient_id": str(patient), "on": world.today.isoformat(), "kind": "phone", **data}
    return partner_event(FOLLOWUP, world.center, id, fields, world.now())


def test_a_consumer_run_moves_applied_duplicates_and_dead_letters_and_its_lag_goes_to_zero(
    settings: Settings,
    app: CareCoordination,
    world: World,
    inbound: InboundConsumer,
    port: int,
) -> None:
    patient = world.contracted_patient()
    key = str(patient).encode()
    first = visit(world, patient, "v-1")
    send_inbound(
        settings,
        [
            (key, first),
            (key, visit(world, patient, "v-2")),
            (key, first),  # the same message again: skipped, not applied twice
            (None, visit(world, patient, "keyless")),  # missing-key
            (key, visit(world, patient, "long", note="x" * 5000)),  # schema-violation
            (key, visit(world, patient, "v-3")),
        ],
    )
    topic = inbound_topic(settings.partner_topic_prefix, world.center)
    lag = {"topic": topic, "partition": "0"}
    before = scrape(port)

    # one message at a time: five still wait after the first
    inbound.max_records = 1
    inbound.subscribe()
    for _ in range(60):
        if inbound.poll_once(timeout_ms=500):
            break
    inbound.note_lag()
    assert value(scrape(port), "jiayi_consumer_lag_messages", **lag) == 5

    inbound.max_records = 2000
    inbound.run(threading.Event(), idle_exit=2)  # notes the lag once more as it stops
    after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert len(app.load(FollowUps, FollowUps.id_for(patient)).visits) == 3
    assert moved("jiayi_consumer_messages_applied_total") == 3
    assert moved("jiayi_consumer_duplicates_skipped_total") == 1
    assert moved("jiayi_consumer_dead_letters_total", code="missing-key") == 1
    assert moved("jiayi_consumer_dead_letters_total", code="schema-violation") == 1
    dead = {
        dict(k)["code"]: v - before.get("jiayi_consumer_dead_letters_total", {}).get(k, 0.0)
        for k, v in after["jiayi_consumer_dead_letters_total"].items()
    }
    assert {c: n for c, n in dead.items() if n} == {"missing-key": 1, "schema-violation": 1}
    assert moved("jiayi_consumer_batch_messages_sum") == 6
    assert moved("jiayi_consumer_batch_messages_count") >= 2
    assert value(after, "jiayi_consumer_lag_messages", **lag) == 0
    assert str(patient) not in httpx.get(f"http://127.0.0.1:{port}/metrics").text

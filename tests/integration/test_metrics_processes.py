"""Issue 17, metrics of the worker processes as deployed: ``jiayi projections run`` and ``jiayi
publish`` started with ``JIAYI_METRICS_PORT`` serve their metrics there; an operator sees the
views and the relay catch up with the log (lag 0, positions at its head), the events
published counted, and which of two relays holds the duty (the other standing by)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.application import CareCoordination
from jiayi.bootstrap import build_application, ensure_topics
from jiayi.settings import Settings
from tests.e2e.server import free_port
from tests.kafka_helpers import exchange_settings, partners
from tests.world import build_world

ROOT = Path(__file__).resolve().parents[2]
Labels = frozenset[tuple[str, str]]
Scrape = dict[str, dict[Labels, float]]


def env_for(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_POSTGRES_URL=settings.postgres_dsn() if settings.uses_postgres else "",
        JIAYI_POSTGRES_SCHEMA=settings.postgres_schema or "",
        JIAYI_DATA_DIR=str(settings.data_dir),
        JIAYI_MASTER_KEY_FILE=str(settings.master_key_path),
        JIAYI_METRICS_PORT=str(port),
        PYTHONPATH=str(ROOT),
    )
    if settings.kafka_bootstrap:
        env.update(
            JIAYI_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
            JIAYI_PARTNER_TOPIC_PREFIX=settings.partner_topic_prefix,
            JIAYI_PLATFORM_TOPIC=settings.platform_topic or "",
            JIAYI_KAFKA_SECURITY_PROTOCOL=settings.kafka_security_protocol,
            JIAYI_KAFKA_USERNAME=settings.kafka_username or "",
            JIAYI_KAFKA_PASSWORD=(
                settings.kafka_password.get_secret_value() if settings.kafka_password else ""
            ),
        )
    return env


@contextmanager
def process(settings: Settings, *command: str) -> Iterator[Callable[[], Scrape]]:
    """``jiayi <command>`` with a metrics port; yields a function scraping it; SIGTERM at the
    end, which it must survive with exit status 0."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "jiayi.cli", *command],
        env=env_for(settings, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def scrape() -> Scrape:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        out: Scrape = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
        return out

    try:
        yield scrape
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            status = child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
        assert child.stderr is not None
        assert status == 0, child.stderr.read().decode()[-2000:]


def value(found: Scrape, name: str, **labels: str) -> float | None:
    return found.get(name, {}).get(frozenset(labels.items()))


def until(
    scrape: Callable[[], Scrape], ok: Callable[[Scrape], bool], timeout: float = 60
) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = scrape()
        except httpx.TransportError:  # not listening yet
            found = {}
        if found and ok(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"the metrics never got there: {found}")
        time.sleep(0.2)


@pytest.fixture
def app(settings: Settings) -> Iterator[CareCoordination]:
    app = build_application(settings)
    yield app
    app.close()


def test_the_projection_runner_serves_the_views_lag_on_its_metrics_port(
    settings: Settings, app: CareCoordination
) -> None:
    build_world(app)
    head = app.max_position()
    views = ("directory", "timeline", "care", "relations")
    with process(settings, "projections", "run") as scrape:
        found = until(
            scrape,
            lambda f: all(value(f, "jiayi_view_position", view=v) == head for v in views),
        )
        assert value(found, "jiayi_log_head_position") == head
        for view in views:
            assert value(found, "jiayi_view_lag_events", view=view) == 0
            assert value(found, "jiayi_view_lag_seconds", view=view) == 0


@pytest.mark.kafka
def test_the_relay_serves_its_lag_its_publishing_and_which_relay_holds_the_duty(
    settings: Settings, kafka_bootstrap: str, app: CareCoordination
) -> None:
    exchange = exchange_settings(settings, kafka_bootstrap)
    world = build_world(app)
    ensure_topics(exchange, partners(world))
    head = app.max_position()
    duty = f"kafka-relay:{exchange.partner_topic_prefix}"
    with process(exchange, "publish") as first:
        found = until(
            first,
            lambda f: value(f, "jiayi_relay_lag_events", relay=exchange.partner_topic_prefix) == 0,
        )
        assert value(found, "jiayi_relay_position", relay=exchange.partner_topic_prefix) == head
        assert value(found, "jiayi_relay_events_published_total") == head
        assert value(found, "jiayi_duty_held", duty=duty) == 1
        with process(exchange, "publish") as second:
            standby = until(second, lambda f: value(f, "jiayi_duty_held", duty=duty) is not None)
            assert value(standby, "jiayi_duty_held", duty=duty) == 0
            assert value(standby, "jiayi_relay_events_published_total") == 0
            assert value(first(), "jiayi_duty_held", duty=duty) == 1

"""Issue 17, metrics: an operator reading ``/metrics`` after a journey through the API finds
each request counted once under its route template and status class (never a patient's id in a
label), timed, and the views' lag going back to zero; ``/metrics`` is not served unless asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jiayi.settings import Settings
from tests.e2e.server import HttpWorld, Served, bearer, build_http_world, serve

Labels = frozenset[tuple[str, str]]


def scrape(http: httpx.Client) -> dict[str, dict[Labels, float]]:
    """Every sample of ``/metrics``: name -> labels -> value."""
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def value(found: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    return found.get(name, {}).get(frozenset(labels.items()), 0.0)


@pytest.fixture
def metered(settings: Settings) -> Iterator[Served]:
    with serve(settings.model_copy(update={"metrics_on_api": True})) as server:
        yield server


@pytest.fixture
def http(metered: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=metered.url, timeout=30) as client:
        yield client


@pytest.fixture
def world(metered: Served, http: httpx.Client) -> HttpWorld:
    return build_http_world(metered, http)


def test_a_journey_moves_the_request_counters_by_exactly_its_requests_and_the_views_catch_up(
    world: HttpWorld, http: httpx.Client
) -> None:
    before = scrape(http)
    patient, _ = world.contracted()  # POST /patients, POST /contracts
    referral = world.referral(patient)  # POST /referrals
    head = world.served.services.application().max_position()  # read our own writes
    r = http.get(
        f"/patients/{patient}",
        params={"wait_for_position": head},
        headers=bearer(world.center.token),
    )
    assert r.status_code == 200, r.text
    r = http.get(f"/patients/{uuid.uuid4()}", headers=bearer(world.center.token))
    assert r.status_code == 404
    r = http.post("/patients", json={"name": ""}, headers=bearer(world.center.token))
    assert r.status_code == 422
    r = http.post(f"/referrals/{referral}/accept", json={}, headers=bearer(world.hospital.token))
    assert r.status_code == 200, r.text
    r = http.request("BREW", f"/no/such/{patient}")  # neither the method nor the path a label
    assert r.status_code in (404, 405)
    after = scrape(http)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    expected = {
        ("POST", "/patients", "2xx"): 1,
        ("POST", "/patients", "4xx"): 1,
        ("POST", "/contracts", "2xx"): 1,
        ("POST", "/referrals", "2xx"): 1,
        ("POST", "/referrals/{referral_id}/accept", "2xx"): 1,
        ("GET", "/patients/{patient_id}", "2xx"): 1,
        ("GET", "/patients/{patient_id}", "4xx"): 1,
        ("other", "unmatched", "4xx"): 1,
    }
    for (method, route, status), n in expected.items():
        labels = {"method": method, "route": route, "status": status}
        assert moved("jiayi_http_requests_total", **labels) == n, labels
        assert moved("jiayi_http_request_duration_seconds_count", **labels) == n, labels
        assert moved("jiayi_http_request_duration_seconds_sum", **labels) > 0, labels
    # nothing else moved but the first scrape itself
    others = {
        labels: v - before.get("jiayi_http_requests_total", {}).get(labels, 0.0)
        for labels, v in after["jiayi_http_requests_total"].items()
    }
    counted = {
        k: v
        for k, v in others.items()
        if v and (dict(k)["method"], dict(k)["route"], dict(k)["status"]) not in expected
    }
    assert counted == {frozenset({("method", "GET"), ("route", "/metrics"), ("status", "2xx")}): 1}

    # no id of anything in any label
    text = http.get("/metrics").text
    for id in (patient, referral, world.center.id):
        assert str(id) not in text and id.hex not in text

    # the views catch up: lag 0 in events and seconds, positions at the log's head
    deadline = time.monotonic() + 20
    while True:
        now = scrape(http)
        head = value(now, "jiayi_log_head_position")
        lags = now.get("jiayi_view_lag_events", {})
        if (lags and not any(lags.values())) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    views = {"directory", "timeline", "care", "relations"}
    assert {dict(k)["view"] for k in lags} == views
    assert head >= value(before, "jiayi_log_head_position") + 4  # the journey's events at least
    for view in views:
        assert value(now, "jiayi_view_lag_events", view=view) == 0
        assert value(now, "jiayi_view_lag_seconds", view=view) == 0
        assert value(now, "jiayi_view_position", view=view) == head
    assert value(now, "jiayi_replay_stores", state="ready") == 0


def test_the_views_lag_is_counted_in_events_and_seconds_while_they_do_not_follow(
    settings: Settings,
) -> None:
    """A server whose views are followed elsewhere (``JIAYI_PROJECTIONS_IN_PROCESS=false``, no
    runner here): its writes show as lag, in events and in seconds since the first one."""
    from api.main import create_app
    from jiayi.bootstrap import build_application, build_projections

    metered = settings.model_copy(update={"metrics_on_api": True})
    app = build_application(metered)
    views = build_projections(metered, app, run=False)
    server = Served(create_app(metered, app=app, queries=views.queries)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            world = build_http_world(server, http)
            head = app.max_position()
            time.sleep(1.1)
            found = scrape(http)
        assert value(found, "jiayi_log_head_position") == head > 0
        for view in ("directory", "timeline", "care", "relations"):
            assert value(found, "jiayi_view_lag_events", view=view) == head
            assert value(found, "jiayi_view_position", view=view) == 0
            assert value(found, "jiayi_view_lag_seconds", view=view) >= 1.0
        assert world.center.id  # the world was built through the metered API
    finally:
        server.stop()
        views.close()
        app.close()


def test_metrics_are_not_on_the_api_unless_asked(settings: Settings) -> None:
    with serve(settings) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/metrics").status_code == 404

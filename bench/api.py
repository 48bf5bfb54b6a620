"""API benchmark: prints figures, is not a test.

1. Booking race: 500 concurrent booking requests for 50 slots through the HTTP server; prints
   how many succeeded (must be exactly 50) and the latency percentiles.
2. Timelines: 50 concurrent clients read patient timelines; prints p50/p99 and requests/s.
   Needs the read side wired into the API (until then it reports read-side-unavailable).

    JIAYI_POSTGRES_URL=postgresql://... python bench/api.py [--timeline-seconds 20]

Without JIAYI_POSTGRES_URL it runs on a throwaway SQLite store. The timeline part reads the
patients already in the store (build one with `jiayi demo --patients N`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.main import create_app
from api.tokens import Role
from jiayi.bootstrap import build_application
from jiayi.commands.serve import build_read_side
from jiayi.settings import Settings
from tests.e2e.server import Served, bearer
from tests.world import build_world


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def booking_race(served: Served, settings: Settings, requests: int, slots: int) -> None:
    app = served.services.application()
    world = build_world(app)
    patients = [world.contracted_patient(serial=i) for i in range(requests)]
    session = world.today + timedelta(days=3)
    quota = app.publish_quota(
        world.hospital,
        "expert",
        "cardiology",
        session,
        slots,
        datetime.now(UTC) + timedelta(days=2),
        world.hospital_staff,
        expert="Dr. Zhou",
        half_day="am",
        reserved_for_center=world.center,
    ).id
    token = served.token(Role.CENTER_STAFF, world.center, "鼓楼区", staff="gp-1")
    latencies: list[float] = []
    statuses: list[int] = []

    def book(pid: uuid.UUID, client: httpx.Client) -> None:
        began = time.perf_counter()
        r = client.post(
            f"/quotas/{quota}/bookings", json={"patient_id": str(pid)}, headers=bearer(token)
        )
        latencies.append(time.perf_counter() - began)
        statuses.append(r.status_code)

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with httpx.Client(base_url=served.url, timeout=60, limits=limits) as client:
        began = time.perf_counter()
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(lambda p: book(p, client), patients))
        elapsed = time.perf_counter() - began
    ok = statuses.count(201)
    full = statuses.count(409)
    print(f"booking race: {requests} requests for {slots} slots in {elapsed:.1f} s")
    print(
        f"  succeeded: {ok} (must be exactly {slots}); refused 409: {full}; other: "
        f"{len(statuses) - ok - full}"
    )
    print(
        f"  p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    if ok != slots:
        raise SystemExit("booking race: wrong number of successful bookings")


def timelines(served: Served, seconds: float, clients: int) -> None:
    app = served.services.application()
    topic = "domain.patients:Patient.Registered"
    patients = [n.originator_id for n in app.recorder.select_notifications(1, 5000, topics=[topic])]
    token = served.token(Role.AUDITOR, staff="bench")
    with httpx.Client(base_url=served.url, timeout=30) as probe:
        r = probe.get(f"/patients/{patients[0]}/timeline", headers=bearer(token))
        if r.status_code == 503:
            print(f"timelines: skipped ({r.json().get('code')})")
            return
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def reader(i: int) -> None:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            k = i
            while time.perf_counter() < stop:
                pid = patients[k % len(patients)]
                k += clients
                began = time.perf_counter()
                client.get(f"/patients/{pid}/timeline", headers=bearer(token))
                latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(reader, range(clients)))
    elapsed = time.perf_counter() - began
    events = app.max_position()
    print(
        f"timelines: {clients} clients, {len(latencies)} requests on a store of {events:,} events"
    )
    print(
        f"  p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(latencies, 0.99) * 1000:.1f} ms, {len(latencies) / elapsed:,.0f} req/s"
    )
    print(f"  median {statistics.median(latencies) * 1000:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--timeline-seconds", type=float, default=20)
    args = parser.parse_args()
    settings = Settings()
    if not settings.uses_postgres:
        settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="jiayi-bench-")))
    application = build_application(settings)
    queries = build_read_side(settings, application)
    served = Served(create_app(settings, app=application, queries=queries)).start()
    try:
        booking_race(served, settings, args.requests, args.slots)
        timelines(served, args.timeline_seconds, args.clients)
    finally:
        served.stop()
        application.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

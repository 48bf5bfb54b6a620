"""API benchmark: prints figures, is not a test. Stops by itself.

1. Booking race: 500 concurrent booking requests for 50 slots through a real uvicorn server on
   loopback; prints how many succeeded (must be exactly 50) and the latency percentiles. Runs
   in a throwaway PostgreSQL schema (dropped afterwards), or a throwaway SQLite store.
2. Timelines: 50 concurrent clients (asyncio + httpx, closed loop) read patient timelines
   from a `jiayi serve` process on loopback, first on a large store, then on a store about
   10x smaller; prints p50/p99 and requests/s for each and the ratio of the p99s. Then the
   same at a fixed offered rate (``--rate``, open loop), where latency includes queueing. The stores
   are read as they are: no events are written into them (the views are caught up first when
   they are behind, and one auditor token is issued).
3. Timelines on the large store at the same fixed rate while ``--replays`` (20) auditors ask
   for the views as of as many distinct moments (each a whole rebuild of the views, built by
   the server in a child process, at most ``JIAYI_ASOF_BUILDS`` at once; a request refused
   with 503 ``as-of-busy`` is asked again after its Retry-After): prints the p99 against the
   target (25 ms) and the ratio, the p99 at the same rate without them, and the as-of answers.
   The replay stores it made are deleted afterwards.

Metrics (issue 17): with ``--metrics both`` (the default) the cost of counting requests is
measured first on the ASGI app alone (``GET /health``, no network), then the booking race
(and, with stores, the closed-loop timelines on the large one) run ``--rounds`` times each with
metrics off and on, alternating, the metered server scraped every second; the medians and the
ratio on/off are printed (target: within 5%).

    JIAYI_POSTGRES_URL=postgresql://... python bench/api.py \\
        --large bench_replay_1m --small bench_api_100k [--seconds 15] [--no-race]

PostgreSQL needs a master key file (``JIAYI_MASTER_KEY_FILE``): unless one is set, the bench
uses ``var/bench/master.key`` (created if missing); build its stores with the same key:
`JIAYI_MASTER_KEY_FILE=var/bench/master.key JIAYI_POSTGRES_SCHEMA=<schema> jiayi demo
--patients N --today 2026-05-30` (about 5 events per resident) and their views with
`jiayi projections rebuild`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.database import SideStore
from api.main import create_app
from api.tokens import Role, TokenStore
from eventstore.keys import MasterKey
from jiayi.bootstrap import build_application, build_projections, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import Runner
from tests.e2e.server import Served, bearer, free_port
from tests.world import build_world

PATIENT_REGISTERED = "domain.patients:Patient.Registered"
#: The bench's master key file on PostgreSQL when JIAYI_MASTER_KEY_FILE is not set.
BENCH_MASTER_KEY = Path(__file__).resolve().parents[1] / "var" / "bench" / "master.key"
#: Timeline p99 at the fixed rate while as-of replays are built (issue 15).
REPLAYS_P99_TARGET = 0.025


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- 1. the booking race ---------------------------------------------------------------------


class Scraper:
    """What Prometheus does, more often: ``GET /metrics`` every second while it runs."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scraper:
        if self.url is not None:
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.url is not None:
            self.thread.join()

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.url}/metrics", timeout=5).raise_for_status()


def asgi_overhead(rounds: int = 5, n: int = 3000) -> None:
    """What counting a request costs the API, without the network and without the noise of
    other work on the machine: ``GET /health`` (the cheapest route: no database) called
    straight on the ASGI app, with metrics off and on, alternating batches of ``n``."""
    data = Path(tempfile.mkdtemp(prefix="jiayi-bench-"))
    apps = {
        metered: create_app(Settings(data_dir=data, metrics_on_api=metered))
        for metered in (False, True)
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health",
        "raw_path": b"/health",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200

    async def batch(app: object) -> float:
        began = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)  # type: ignore[operator]
        return (time.perf_counter() - began) / n

    async def measure() -> dict[bool, list[float]]:
        times: dict[bool, list[float]] = {False: [], True: []}
        for app in apps.values():
            await batch(app)  # warm up
        for n in range(rounds):
            for metered, app in list(apps.items())[:: 1 if n % 2 == 0 else -1]:
                times[metered].append(await batch(app))
        return times

    times = asyncio.run(measure())
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"GET /health on the ASGI app, no network (medians of {rounds} alternating batches of "
        f"{n}): metrics off {off * 1e6:.0f} us, on {on * 1e6:.0f} us per request: "
        f"+{(on - off) * 1e6:.0f} us, ratio of throughputs on/off {off / on:.3f}"
    )


def booking_race(
    requests: int, slots: int, clients: int, metered: bool = False
) -> tuple[float, float]:
    """The p99 latency and requests/s; fails when the number of successful bookings is not
    ``slots``. ``metered``: the server counts requests and is scraped every second."""
    base = Settings()
    schema = f"bench_race_{uuid.uuid4().hex[:8]}"
    if base.uses_postgres:
        settings = Settings(postgres_schema=schema, metrics_on_api=metered)
    else:
        data = Path(tempfile.mkdtemp(prefix="jiayi-bench-"))
        settings = Settings(data_dir=data, metrics_on_api=metered)
    app = build_application(settings)
    projections = build_projections(settings, app)
    served = Served(create_app(settings, app=app, queries=projections.queries)).start()
    try:
        print(f"metrics {'on' if metered else 'off'}: ", end="")
        with Scraper(served.url if metered else None):
            return _race(served, requests, slots, clients)
    finally:
        served.stop()
        projections.close()
        app.close()
        if settings.uses_postgres:
            _drop_schemas(settings, schema)


def _race(served: Served, requests: int, slots: int, clients: int) -> tuple[float, float]:
    app = served.services.application()
    world = build_world(app)
    patients = [world.contracted_patient(serial=i) for i in range(requests)]
    quota = app.publish_quota(
        world.hospital,
        kind="expert",
        department="cardiology",
        session_date=world.today + timedelta(days=3),
        slots=slots,
        release_at=datetime.now(UTC) + timedelta(days=2),
        actor=world.hospital_staff,
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
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda p: book(p, client), patients))
        elapsed = time.perf_counter() - began
    ok, full = statuses.count(201), statuses.count(409)
    p99 = percentile(latencies, 0.99)
    print(f"booking race: {requests} requests for {slots} slots in {elapsed:.1f} s")
    print(f"  succeeded: {ok} (must be exactly {slots}); refused 409: {full}; other: ", end="")
    print(len(statuses) - ok - full)
    print(f"  p50 {ms(percentile(latencies, 0.5))}, p99 {ms(p99)}")
    if ok != slots:
        raise SystemExit("booking race: wrong number of successful bookings")
    return p99, requests / elapsed


def _drop_schemas(settings: Settings, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as conn:
        found = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR starts_with(nspname, %s)",
            (schema, f"{schema}_asof_"),
        ).fetchall()
        for (name,) in found:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


# --- 2. timelines on two store sizes ---------------------------------------------------------


class Store:
    """One existing store (a PostgreSQL schema): its size, sample patients and a token."""

    def __init__(self, schema: str, sample: int = 5000) -> None:
        self.schema = schema
        self.settings = Settings(postgres_schema=schema)
        app = build_application(self.settings)
        try:
            reader = LogReader(app)
            self.events = reader.max_position()
            if self.events == 0:
                raise SystemExit(f"schema {schema} holds no events")
            projections = build_projections(self.settings, app, run=False)
            try:
                if projections.queries.position() < self.events:
                    print(f"  {schema}: catching the views up to {self.events:,} ...")
                    store = view_location(self.settings).open()
                    Runner(store, reader).catch_up()
                    store.close()
            finally:
                projections.close()
            self.patients = self._sample(app, sample)
            self.moments = self._moments(reader, 20)
        finally:
            app.close()
        side = SideStore(self.settings)
        self.token = TokenStore(side).issue("bench", Role.AUDITOR)[0]
        side.close()

    def _moments(self, reader: LogReader, n: int) -> list[str]:
        """``n`` distinct moments spread along the log (when its events were recorded)."""
        found: list[str] = []
        for k in range(1, n + 1):
            events = reader.decode(reader.page(k * self.events // (n + 1), 1))
            moment = datetime.fromisoformat(events[0].timestamp)
            while moment.isoformat() in found:
                moment += timedelta(microseconds=1)
            found.append(moment.isoformat())
        return found

    def _sample(self, app: object, n: int) -> list[str]:
        """Patients registered all along the log, not only at its start."""
        recorder = app.recorder  # type: ignore[attr-defined]
        out: list[str] = []
        slices = 20
        for k in range(slices):
            start = 1 + k * self.events // slices
            found = recorder.select_notifications(start, n // slices, topics=[PATIENT_REGISTERED])
            out += [str(x.originator_id) for x in found]
        return out


class Server:
    """``jiayi serve`` on a free loopback port, as its own process, on ``store``."""

    def __init__(self, store: Store, metered: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JIAYI_POSTGRES_SCHEMA": store.schema,
            "JIAYI_PROJECTIONS_IN_PROCESS": "false",
            "JIAYI_METRICS_ON_API": "true" if metered else "false",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jiayi.cli", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("the server exited")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not become ready")

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _read(url: str, store: Store, clients: int, seconds: float, warmup: float) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = bearer(store.token)
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        began = time.perf_counter()
        measure_from = began + warmup
        stop = measure_from + seconds

        async def reader(i: int) -> None:
            nonlocal failures
            k = i
            while (now := time.perf_counter()) < stop:
                pid = store.patients[k % len(store.patients)]
                k += clients
                r = await client.get(f"/patients/{pid}/timeline", headers=headers)
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append(done - now)
                    failures += r.status_code != 200

        await asyncio.gather(*(reader(i) for i in range(clients)))
    return {"latencies": latencies, "failures": failures, "seconds": seconds}


async def _paced(url: str, store: Store, clients: int, seconds: float, rate: float) -> dict:
    """Open loop: ``rate`` requests a second on a fixed schedule, at most ``clients`` at once;
    latency counts from the scheduled moment, so queueing is included (no coordinated
    omission)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = bearer(store.token)
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for pid in store.patients[:clients]:  # warm the connections
            await client.get(f"/patients/{pid}/timeline", headers=headers)
        began = time.perf_counter()

        async def one(k: int, due: float) -> None:
            nonlocal failures
            pid = store.patients[k % len(store.patients)]
            r = await client.get(f"/patients/{pid}/timeline", headers=headers)
            latencies.append(time.perf_counter() - due)
            failures += r.status_code != 200

        tasks = []
        for k in range(int(seconds * rate)):
            due = began + k / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(k, due)))
        await asyncio.gather(*tasks)
    return {"latencies": latencies, "failures": failures, "seconds": seconds}


def timelines(
    store: Store, clients: int, seconds: float, rate: float | None = None, metered: bool = False
) -> float:
    return timelines_measured(store, clients, seconds, rate, metered)[0]


def timelines_measured(
    store: Store, clients: int, seconds: float, rate: float | None = None, metered: bool = False
) -> tuple[float, float]:
    """The p99 latency and requests/s of timeline reads (``metered``: metrics on the server,
    scraped every second)."""
    with Server(store, metered) as server, Scraper(server.url if metered else None):
        if rate:
            result = asyncio.run(_paced(server.url, store, clients, seconds, rate))
        else:
            result = asyncio.run(_read(server.url, store, clients, seconds, warmup=2.0))
    lat = result["latencies"]
    p99 = percentile(lat, 0.99)
    mode = f"{rate:g} requests/s offered" if rate else f"{clients} clients, closed loop"
    print(
        f"timelines on {store.schema} ({store.events:,} events): {mode}, "
        f"metrics {'on' if metered else 'off'}, {len(lat):,} requests, "
        f"{result['failures']} not 200"
    )
    throughput = len(lat) / result["seconds"]
    print(f"  p50 {ms(percentile(lat, 0.5))}, p99 {ms(p99)}, {throughput:,.0f} req/s")
    return p99, throughput


def compare(name: str, off: list[tuple[float, float]], on: list[tuple[float, float]]) -> None:
    """Medians of the runs without and with metrics, and their ratios (target: within 5%)."""
    if not off or not on:
        return
    p99_off, p99_on = (statistics.median(r[0] for r in runs) for runs in (off, on))
    rps_off, rps_on = (statistics.median(r[1] for r in runs) for runs in (off, on))
    ratio = rps_on / rps_off
    # each round's two runs are neighbours (off, on, on, off, ...): their ratio is free of
    # the drift across the whole run
    paired = statistics.geometric_mean(b[1] / a[1] for a, b in zip(off, on, strict=True))
    print(
        f"{name}, metrics off vs on (medians of {len(off)} alternating runs): "
        f"{rps_off:,.0f} vs {rps_on:,.0f} req/s, ratio on/off {ratio:.3f}, per round "
        f"{paired:.3f} (geometric mean; target >= 0.95: "
        f"{'met' if min(ratio, paired) >= 0.95 else 'NOT met'}); p99 {ms(p99_off)} vs "
        f"{ms(p99_on)}"
    )


async def _with_replays(
    url: str, store: Store, clients: int, seconds: float, rate: float, moments: list[str]
) -> tuple[dict, Counter[int]]:
    """:func:`_paced` while one auditor per moment asks for a timeline as of it (asking again
    after the Retry-After of a 503) until the measurement ends."""
    headers = bearer(store.token)
    answers: Counter[int] = Counter()
    over = asyncio.Event()
    limits = httpx.Limits(max_connections=len(moments), max_keepalive_connections=len(moments))
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as auditors:

        async def as_of(k: int, moment: str) -> None:
            pid = store.patients[k % len(store.patients)]
            while not over.is_set():
                r = await auditors.get(
                    f"/patients/{pid}/timeline", params={"as_of": moment}, headers=headers
                )
                answers[r.status_code] += 1
                if r.status_code != 503:
                    return
                pause = float(r.headers.get("retry-after", "5"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(over.wait(), pause)

        asking = [asyncio.create_task(as_of(k, m)) for k, m in enumerate(moments)]
        await asyncio.sleep(1.0)  # the first builds are running, the others waiting or refused
        result = await _paced(url, store, clients, seconds, rate)
        over.set()
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
    return result, answers


def timelines_with_replays(
    store: Store, clients: int, seconds: float, rate: float, replays: int, p99_alone: float
) -> float:
    moments = store.moments[:replays]
    try:
        with Server(store) as server:
            result, answers = asyncio.run(
                _with_replays(server.url, store, clients, seconds, rate, moments)
            )
    finally:
        _drop_replays(store.settings)
    lat = result["latencies"]
    p99 = percentile(lat, 0.99)
    print(
        f"timelines on {store.schema} ({store.events:,} events): {rate:g} requests/s offered "
        f"while {len(moments)} distinct as-of requests run, {len(lat):,} requests, "
        f"{result['failures']} not 200"
    )
    print(
        f"  p50 {ms(percentile(lat, 0.5))}, p99 {ms(p99)}; target {ms(REPLAYS_P99_TARGET)}: "
        f"ratio {p99 / REPLAYS_P99_TARGET:.2f}; vs {ms(p99_alone)} without them: "
        f"ratio {p99 / p99_alone:.2f}"
    )
    shown = ", ".join(f"{n} x {status}" for status, n in sorted(answers.items()))
    print(f"  as-of answers meanwhile: {shown or 'none'} (503: as-of-busy, asked again)")
    return p99


def _drop_replays(settings: Settings) -> None:
    """The replay stores the bench made, and their catalogue rows (the store as it was)."""
    import psycopg
    from psycopg import sql

    from projections.replays import CATALOGUE

    prefix = view_location(settings).replay_prefix()
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as conn:
        found = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
        for (name,) in found:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("DELETE FROM {}.{}").format(
                sql.Identifier(settings.postgres_schema or "public"), sql.Identifier(CATALOGUE)
            )
        )


def bench_master_key() -> None:
    """PostgreSQL needs a master key file: the bench's own unless one is set."""
    if not os.environ.get("JIAYI_POSTGRES_URL") or os.environ.get("JIAYI_MASTER_KEY_FILE"):
        return
    if not BENCH_MASTER_KEY.exists():
        MasterKey.create(BENCH_MASTER_KEY)
    os.environ["JIAYI_MASTER_KEY_FILE"] = str(BENCH_MASTER_KEY)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15, help="per timeline measurement")
    parser.add_argument("--large", help="schema of the large store (>= 1,000,000 events)")
    parser.add_argument("--small", help="schema of a store about 10x smaller")
    parser.add_argument("--no-race", action="store_true", help="skip the booking race")
    parser.add_argument(
        "--rate",
        type=float,
        default=100,
        help="also measure open loop at this many requests/s (0: closed loop only)",
    )
    parser.add_argument(
        "--replays",
        type=int,
        default=20,
        help="distinct as-of moments asked for during a last run at --rate (0: skip it)",
    )
    parser.add_argument(
        "--metrics",
        choices=["both", "off", "on"],
        default="both",
        help="servers without and with metrics (counted, /metrics scraped every second), "
        "alternating runs (both), or only one kind",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per kind when comparing")
    args = parser.parse_args()
    bench_master_key()
    kinds = {"both": [False, True], "off": [False], "on": [True]}[args.metrics]
    if len(kinds) > 1:
        asgi_overhead()
    if not args.no_race:
        races: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for n in range(args.rounds if len(kinds) > 1 else 1):
            for metered in kinds if n % 2 == 0 else kinds[::-1]:  # off, on, on, off, ...
                races[metered].append(
                    booking_race(args.requests, args.slots, args.clients, metered)
                )
        compare("booking race", races[False], races[True])
    if not (args.large and args.small):
        print("timelines: skipped (give --large and --small schemas)")
        return 0
    if not Settings().uses_postgres:
        raise SystemExit("timelines need JIAYI_POSTGRES_URL")
    large, small = Store(args.large), Store(args.small)
    if len(kinds) > 1:
        reads: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for n in range(args.rounds):
            for metered in kinds if n % 2 == 0 else kinds[::-1]:
                reads[metered].append(
                    timelines_measured(large, args.clients, args.seconds, None, metered)
                )
        compare(f"timelines on {large.schema}, closed loop", reads[False], reads[True])
    for rate in [None, args.rate] if args.rate else [None]:
        p99_large = timelines(large, args.clients, args.seconds, rate)
        p99_small = timelines(small, args.clients, args.seconds, rate)
        print(
            f"p99 {ms(p99_large)} on {large.events:,} events vs {ms(p99_small)} on "
            f"{small.events:,} ({large.events / small.events:.1f}x): "
            f"ratio {p99_large / p99_small:.2f}"
        )
    if args.rate and args.replays:
        timelines_with_replays(
            large, args.clients, args.seconds, args.rate, args.replays, p99_alone=p99_large
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

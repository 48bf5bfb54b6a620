"""Every Prometheus metric jiayi exports, defined once (names ``jiayi_...``, units in names).

Two kinds:

- *Counted as things happen* (counters, histograms, gauges set by the process): HTTP requests
  per route template and status class (:mod:`api.metrics`), the consumer's batches, messages
  applied, duplicates skipped, dead letters by code and lag per partition, the relay's
  publishing, and which duty (a leadership lock) this process holds (:func:`duty_held`).
- *Read when scraped* (:class:`Sources`, one collector): the log's head, each view's position
  and lag (events and seconds), the relay's position and lag, the as-of replay stores and their
  bytes. Each process registers the sources it has (:func:`watch`); a source that fails is
  logged and counted (``jiayi_metrics_errors_total{source}``) and its samples left out: a scrape
  never raises into a request or a worker's loop.

Labels never carry a patient, referral or person: routes are templates (``/patients/{id}``),
topics are partner organisations' (``jiayi.partner.<org>.in``), codes come from a closed list.

Nothing here runs at import time but the metrics' definitions in the default registry; a
process serves them with :func:`serve` (``JIAYI_METRICS_PORT``) or on the API's ``/metrics``
(``JIAYI_METRICS_ON_API``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from jiayi.settings import Settings
    from projections.events import LogReader
    from projections.location import Location
    from projections.store import ViewStore

log = logging.getLogger(__name__)

# --- HTTP (api/metrics.py) --------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "jiayi_http_requests_total",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, ...)",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "jiayi_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its answer, by method, route template and "
    "status class",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# --- the inbound consumer (consumers/inbound.py) ----------------------------------------------

CONSUMER_BATCH = Histogram(
    "jiayi_consumer_batch_messages",
    "Partner messages per partition batch recorded in one transaction",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
CONSUMER_APPLIED = Counter(
    "jiayi_consumer_messages_applied_total", "Partner messages applied (their events recorded)"
)
CONSUMER_DUPLICATES = Counter(
    "jiayi_consumer_duplicates_skipped_total",
    "Partner messages skipped because they were applied before (redelivered or re-published)",
)
DEAD_LETTERS = Counter(
    "jiayi_consumer_dead_letters_total",
    "Partner messages dead-lettered, by jiayi.error.code (other: a code not in the list)",
    ["code"],
)
CONSUMER_LAG = Gauge(
    "jiayi_consumer_lag_messages",
    "Messages of an assigned partition after the stored position (the broker's end offset "
    "minus the offset stored with the events), set by the consumer's loop",
    ["topic", "partition"],
)

# --- the relay (consumers/outbound.py) --------------------------------------------------------

RELAY_PUBLISHED = Counter(
    "jiayi_relay_events_published_total", "Domain events published (their position stored)"
)
RELAY_SENT = Counter(
    "jiayi_relay_messages_sent_total", "Kafka messages the relay had acknowledged (all recipients)"
)

# --- duties: leadership locks -----------------------------------------------------------------

DUTY_HELD = Gauge(
    "jiayi_duty_held",
    "1 while this process holds the lock of a single-writer duty (relay, projections), else 0",
    ["duty"],
)

# --- the collection itself -------------------------------------------------------------------

METRICS_ERRORS = Counter(
    "jiayi_metrics_errors_total", "Sources that failed while being scraped", ["source"]
)

#: The metrics read when scraped: name -> (help, label names).
STATE: dict[str, tuple[str, tuple[str, ...]]] = {
    "jiayi_log_head_position": ("The last position recorded in the event log", ()),
    "jiayi_view_position": ("The log position a view has processed up to", ("view",)),
    "jiayi_view_lag_events": ("Events recorded in the log that a view lacks", ("view",)),
    "jiayi_view_lag_seconds": (
        "Seconds since the first event a view lacks was recorded (0: it lacks none)",
        ("view",),
    ),
    "jiayi_relay_position": ("The log position the relay has published up to", ("relay",)),
    "jiayi_relay_lag_events": ("Events recorded that the relay has not published", ("relay",)),
    "jiayi_replay_stores": ("As-of replay stores in the catalogue, by state", ("state",)),
    "jiayi_replay_stores_bytes": ("Bytes the as-of replay stores hold, by state", ("state",)),
}

Sample = tuple[str, tuple[str, ...], float]
Source = Callable[[], Iterable[Sample]]


class Sources(Collector):
    """The metrics read when scraped, from the sources this process registered."""

    def __init__(self) -> None:
        self._sources: dict[str, Source] = {}
        self._lock = threading.Lock()

    def watch(self, name: str, source: Source) -> None:
        with self._lock:
            self._sources[name] = source

    def unwatch(self, name: str, source: Source | None = None) -> None:
        """Forget ``name`` (only when it is still ``source``, if given)."""
        with self._lock:
            if source is None or self._sources.get(name) is source:
                self._sources.pop(name, None)

    def describe(self) -> Iterator[Metric]:
        for name, (text, labels) in STATE.items():
            yield GaugeMetricFamily(name, text, labels=list(labels))

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, text, labels=list(labels))
            for name, (text, labels) in STATE.items()
        }
        with self._lock:
            sources = list(self._sources.items())
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for name, source in sources:
            try:
                samples = list(source())  # all or nothing: no half a source's samples
            except Exception:
                log.warning("metrics: source %s could not be read", name, exc_info=True)
                METRICS_ERRORS.labels(name).inc()
                continue
            for metric, labels, value in samples:
                if (metric, labels) not in seen:  # two sources of one series: the first
                    seen.add((metric, labels))
                    families[metric].add_metric(list(labels), value)
        yield from families.values()


SOURCES = Sources()
REGISTRY.register(SOURCES)


def watch(name: str, source: Source) -> Source:
    SOURCES.watch(name, source)
    return source


def unwatch(name: str, source: Source | None = None) -> None:
    SOURCES.unwatch(name, source)


def duty_held(duty: str, held: bool) -> None:
    """Say whether this process holds ``duty``'s lock now (``jiayi_duty_held{duty}``): 1
    while held, 0 while standing by, so operators see which process holds which duty and an
    alert fires when none does (``infra/prometheus/alerts.yml``). Every duty is built by
    ``jiayi.bootstrap.build_duty``, which reports its changes here; duties are named as the
    locks are: ``projections``, ``kafka-relay:<partner topic prefix>``."""
    DUTY_HELD.labels(duty).set(1 if held else 0)


def exported_names() -> set[str]:
    """Every sample name jiayi's metrics export (with ``_total``, ``_bucket``, ``_sum``,
    ``_count``, ``_created``), for checking the alert rules and the dashboard."""
    names = {n for n in REGISTRY._names_to_collectors if n.startswith("jiayi_")}
    return names | set(STATE)


# --- sources ----------------------------------------------------------------------------------


def log_head(reader: LogReader) -> Source:
    def read() -> Iterator[Sample]:
        yield "jiayi_log_head_position", (), float(reader.max_position())

    return read


class ViewsSource:
    """Each view's position and lag, and the replay catalogue, on a connection of its own
    (opened when first scraped, opened again after a failure)."""

    def __init__(self, location: Location, reader: LogReader) -> None:
        self.location = location
        self.reader = reader
        self.store: ViewStore | None = None
        self.lock = threading.Lock()
        #: (view, position) -> when first seen lacking an event whose time cannot be read.
        self.first_seen: dict[tuple[str, int], float] = {}

    def close(self) -> None:
        with self.lock:
            self._drop()

    def _drop(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:
                log.debug("closing the metrics' view store failed", exc_info=True)
            self.store = None

    def __call__(self) -> list[Sample]:
        with self.lock:
            try:
                if self.store is None:
                    self.store = self.location.open()
                positions = self.store.positions()
                replays = self._replays(self.store)
            except Exception:
                self._drop()
                raise
        head = self.reader.max_position()
        samples: list[Sample] = [("jiayi_log_head_position", (), float(head))]
        since: dict[int, float] = {}
        now = time.time()
        for view, position in sorted(positions.items()):
            behind = max(head - position, 0)
            if behind and position not in since:
                since[position] = self._waiting_since(view, position, now)
            seconds = max(now - since[position], 0.0) if behind else 0.0
            samples += [
                ("jiayi_view_position", (view,), float(position)),
                ("jiayi_view_lag_events", (view,), float(behind)),
                ("jiayi_view_lag_seconds", (view,), seconds),
            ]
        self.first_seen = {k: v for k, v in self.first_seen.items() if positions.get(k[0]) == k[1]}
        for state, (count, size) in sorted(replays.items()):
            samples += [
                ("jiayi_replay_stores", (state,), float(count)),
                ("jiayi_replay_stores_bytes", (state,), float(size)),
            ]
        return samples

    def _waiting_since(self, view: str, position: int, now: float) -> float:
        """When the first event after ``position`` was recorded; for one that cannot be read
        (a damaged event), when this process first saw the view waiting there."""
        from eventstore.errors import DamagedEvent

        try:
            lacking = self.reader.decode(self.reader.page(position, 1))
        except DamagedEvent:
            lacking = []
        if lacking:
            return datetime.fromisoformat(lacking[0].timestamp).timestamp()
        return self.first_seen.setdefault((view, position), now)

    @staticmethod
    def _replays(store: ViewStore) -> dict[str, tuple[int, int]]:
        from projections.replays import CATALOGUE

        if store.postgres:
            exists = store.one("SELECT to_regclass(?) IS NOT NULL AS found", [CATALOGUE])
        else:
            exists = store.one(
                "SELECT count(*) > 0 AS found FROM sqlite_master WHERE type = 'table' AND name = ?",
                [CATALOGUE],
            )
        out = {"building": (0, 0), "ready": (0, 0)}
        if not exists or not exists["found"]:
            return out
        for row in store.rows(
            f"SELECT state, count(*) AS n, coalesce(sum(bytes), 0) AS b FROM {CATALOGUE} "
            "GROUP BY state"
        ):
            out[str(row["state"])] = (int(row["n"]), int(row["b"]))
        return out


def watch_views(location: Location, reader: LogReader) -> Callable[[], None]:
    """Export the views' positions and lags, the log's head and the replay stores; the
    function that stops it (and closes the connection)."""
    source = ViewsSource(location, reader)
    watch("views", source)

    def stop() -> None:
        unwatch("views", source)
        source.close()

    return stop


def relay_source(relay: Any) -> Source:
    """The relay's position and lag (the log's head minus it), read from the store."""

    def read() -> Iterator[Sample]:
        position = relay.position()
        head = relay.app.max_position()
        yield "jiayi_log_head_position", (), float(head)
        yield "jiayi_relay_position", (relay.prefix,), float(position)
        yield "jiayi_relay_lag_events", (relay.prefix,), float(max(head - position, 0))

    return read


# --- serving ----------------------------------------------------------------------------------


class Served:
    """The metrics port of this process (:func:`serve`)."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        port: int = self.server.server_port
        return port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(settings: Settings) -> Served | None:
    """Serve the metrics on ``JIAYI_METRICS_PORT`` (a thread of this process); None when unset."""
    if settings.metrics_port is None:
        return None
    server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return Served(server, thread)

"""Builds the application (and later the views, API and consumers) from :class:`Settings`.

Nothing is created at import time: callers build what they need from the settings they have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from uuid import UUID

from audit.access import AccessLog
from audit.access import ensure_table as ensure_access_log
from domain.application import CareCoordination
from domain.common import Actor
from domain.patients import PatientErased
from eventstore.keys import KeyRing, KeyRingError, MasterKey
from eventstore.mapper import PlacedMapper
from jiayi.replay_worker import ProcessBuilder
from jiayi.settings import Settings
from projections.events import LogReader
from projections.location import Location
from projections.replays import Budget
from projections.runner import RebuildSummary, Runner, RunnerThread, rebuild
from projections.views import ViewQueries
from runtime.leadership import Duty, FileLeadership, PostgresLeadership, lock_file_name

if TYPE_CHECKING:
    from consumers.inbound import InboundConsumer
    from consumers.outbound import Relay


def event_store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for the one event store of this deployment."""
    env: dict[str, str] = {}
    if settings.uses_postgres:
        params = settings.postgres_params()
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            POSTGRES_HOST=params["host"],
            POSTGRES_PORT=params["port"],
            POSTGRES_USER=params["user"],
            POSTGRES_PASSWORD=params["password"],
            POSTGRES_DBNAME=params["dbname"],
            POSTGRES_POOL_SIZE=str(settings.postgres_pool_size),
            POSTGRES_MAX_OVERFLOW=str(settings.postgres_max_overflow),
            POSTGRES_CONNECT_TIMEOUT="5",
            POSTGRES_LOCK_TIMEOUT="5",
        )
        if settings.postgres_schema:
            env["POSTGRES_SCHEMA"] = settings.postgres_schema
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            SQLITE_DBNAME=str(settings.sqlite_path),
            SQLITE_LOCK_TIMEOUT="10",
        )
    # Every process reads and writes through the same recorder (the hash chain, the inbox,
    # tracking positions) and mapper (encryption bound to the row's place).
    from eventstore.mapper import CIPHER_TOPIC, MAPPER_TOPIC
    from eventstore.recorders import recorder_topic

    for name, value in (
        ("APPLICATION_RECORDER_TOPIC", recorder_topic(settings.uses_postgres)),
        ("MAPPER_TOPIC", MAPPER_TOPIC),
    ):
        env[name] = value
        env[f"{CareCoordination.name.upper()}_{name}"] = value
    if settings.cipher_key is not None:
        env.update(CIPHER_TOPIC=CIPHER_TOPIC, CIPHER_KEY=settings.cipher_key.get_secret_value())
    # With database functions on, a reader following the log by notification id can miss
    # events under concurrent writers (no table lock). Pinned off, whatever the environment
    # says, under both the plain and the application-prefixed name.
    env["POSTGRES_ENABLE_DB_FUNCTIONS"] = "n"
    env[f"{CareCoordination.name.upper()}_POSTGRES_ENABLE_DB_FUNCTIONS"] = "n"
    env["CREATE_TABLE"] = "y"
    return env


def ensure_schema(settings: Settings) -> None:
    """Create the configured PostgreSQL schema if it does not exist yet."""
    if not (settings.uses_postgres and settings.postgres_schema):
        return
    from psycopg import sql

    from projections.store import connect

    with connect(settings.postgres_params()) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(settings.postgres_schema)
            )
        )


@contextmanager
def ddl_lock(settings: Settings) -> Iterator[None]:
    """Hold the deployment's schema-change lock (PostgreSQL; nothing on SQLite, whose file
    lock already serialises writers). Processes started together on an empty schema (API
    replicas, consumers, the relay) all create the same tables: PostgreSQL's ``IF NOT EXISTS``
    does not make concurrent ``CREATE`` statements safe (they fail with "tuple concurrently
    updated" or a unique violation in the catalog), so they take turns."""
    with schema_lock(settings, "jiayi-ddl"):
        yield


@contextmanager
def schema_lock(settings: Settings, name: str) -> Iterator[None]:
    """Hold the PostgreSQL advisory lock ``name`` of the deployment's schema (on its own
    connection) for the block; nothing on the embedded store, which serves one process."""
    if not settings.uses_postgres:
        yield
        return
    from projections.store import connect

    key = f"{name}:{settings.postgres_schema or 'public'}"
    with connect(settings.postgres_params()) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def build_application(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> CareCoordination:
    """The application on the deployment's event store."""
    env = event_store_env(settings)
    with ddl_lock(settings):  # the schema and the event store's tables
        ensure_schema(settings)
        app = CareCoordination(env=env, clock=clock, timezone=settings.zone())
        return with_keyring(app, settings)


A = TypeVar("A", bound=CareCoordination)


def with_keyring(app: A, settings: Settings) -> A:
    """``app`` sealing personal data with each patient's key (``domain.personal``,
    ``eventstore.personal``), the deployment's key ring opened (:func:`open_keyring`)."""
    keyring = open_keyring(settings)
    cast(PlacedMapper, app.mapper).keyring = keyring
    app.before_record = keyring.ensure
    app.on_close.append(keyring.close)
    return app


def keyring_of(app: CareCoordination) -> KeyRing:
    """The key ring :func:`with_keyring` gave ``app``."""
    keyring = cast(PlacedMapper, app.mapper).keyring
    if keyring is None:
        raise KeyRingError("this application was built without the deployment's key ring")
    return keyring


def erase_patient(app: CareCoordination, patient_id: UUID, *, reason: str, actor: Actor) -> int:
    """Erase a patient: record ``Patient.Erased`` (who, why, when), then destroy their data key,
    after which nothing of their personal data opens anywhere (events, views, as-of replays).
    Run again after a failure between the two, it finishes the erasure. The log position of
    the event (or the log's end when it was recorded before)."""
    try:
        position = app.erase_patient(patient_id, reason=reason, actor=actor).position
    except PatientErased:
        position = app.max_position()  # recorded by an earlier run: destroy the key still
    keyring_of(app).erase(patient_id)
    return position


def open_keyring(settings: Settings) -> KeyRing:
    """The patients' data keys of this deployment, opened with its master key.

    The embedded default creates its master key file when missing and the store holds no
    keys yet; otherwise a missing, unreadable or wrong key file is a :class:`KeyRingError`
    saying which (nothing starts without the key the store's data keys are wrapped by)."""
    path = settings.master_key_path
    keyring: KeyRing | None = None
    try:
        if settings.master_key_file is None and not path.exists():
            probe = KeyRing(view_location(settings).open, MasterKey(bytes(32), "(none)"))
            try:
                if probe.has_keys():
                    raise KeyRingError(
                        f"the master key file {path} is missing, and this store holds data keys "
                        "wrapped by it: restore the file (JIAYI_MASTER_KEY_FILE)"
                    )
            finally:
                probe.close()
            MasterKey.create(path)
        keyring = KeyRing(view_location(settings).open, MasterKey.load(path))
        return keyring.open()
    except KeyRingError:
        if keyring is not None:
            keyring.close()
        raise


def view_location(settings: Settings) -> Location:
    """Where the views live: beside the events (same SQLite file / PostgreSQL schema)."""
    if settings.uses_postgres:
        return Location(postgres_params=settings.postgres_params(), schema=settings.postgres_schema)
    return Location(sqlite_path=settings.sqlite_path, replay_dir=settings.data_dir / "asof")


def replay_budget(settings: Settings) -> Budget:
    """How many views as of a moment are kept and built at once (``JIAYI_ASOF_*``)."""
    return Budget(
        max_stores=settings.asof_max_stores,
        max_bytes=settings.asof_max_bytes,
        builds=settings.asof_builds,
        queue=settings.asof_queue,
    )


@dataclass
class Projections:
    """The views of one deployment: the queries (recording reads in the access log), and
    (when started) the in-process runner. :meth:`close` writes what the access log holds."""

    location: Location
    reader: LogReader
    queries: ViewQueries
    runner: RunnerThread | None = None
    #: Stops exporting the views' metrics (``jiayi.metrics.watch_views``); None: not exported.
    stop_metrics: Callable[[], None] | None = None

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        if self.stop_metrics is not None:
            self.stop_metrics()
        self.queries.close()


def build_projections(
    settings: Settings, app: CareCoordination, run: bool = True, poll: float = 0.05
) -> Projections:
    """Views and queries over ``app``'s log; with ``run`` the runner follows it in-process."""
    location = view_location(settings)
    reader = LogReader(app)
    with ddl_lock(settings):
        store = location.open()
        Runner(store, reader)  # creates missing tables and tracking rows before readers arrive
        ensure_access_log(store)
        store.close()
    runner = None
    if run:  # one runner per event store works: this one stands by while another leads
        duty = build_duty(settings, PROJECTIONS_DUTY)
        runner = RunnerThread(location.open, reader, poll=poll, leadership=duty).start()
    # every read of a patient's data through these queries is recorded (audit.access)
    queries = ViewQueries(
        location,
        reader,
        timezone=settings.zone(),
        access_log=AccessLog(location.open),
        budget=replay_budget(settings),
        builder=ProcessBuilder(settings),  # replays are built out of the serving process
    )
    stop_metrics = None
    if settings.metrics_enabled:
        from jiayi.metrics import watch_views

        stop_metrics = watch_views(location, reader)
    return Projections(location, reader, queries, runner, stop_metrics)


def rebuild_views(
    settings: Settings,
    names: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RebuildSummary:
    """Rebuild views (all, or the ones named) from the log in one transaction.

    One process reads and decodes the log once for every view; rebuilding views in parallel
    processes was measured slower on two cores, each process decoding the whole log again."""
    app = build_application(settings)
    store = view_location(settings).open()
    try:
        return rebuild(store, LogReader(app), names, progress=progress)
    finally:
        store.close()
        app.close()


# --- the Kafka exchange -------------------------------------------------------------------


def _bootstrap(settings: Settings) -> list[str]:
    if not settings.kafka_bootstrap:
        raise ValueError("no Kafka configured (set JIAYI_KAFKA_BOOTSTRAP)")
    return settings.kafka_bootstrap.split(",")


#: Who a Kafka client of jiayi acts as: ``consumer`` (``jiayi consume``: reads the inbound
#: topics, writes dead letters), ``relay`` (``jiayi publish``: writes the outbound topics) and
#: ``admin`` (topics, SCRAM users and ACLs: ``jiayi partners``, :func:`ensure_topics`).
KafkaRole = Literal["consumer", "relay", "admin"]


def kafka_client_config(settings: Settings, role: KafkaRole) -> dict[str, Any]:
    """The connection keyword arguments of every KafkaProducer / KafkaConsumer /
    KafkaAdminClient jiayi builds: brokers, security protocol, SASL credentials, CA file.

    ``consumer`` and ``relay`` authenticate as :attr:`Settings.kafka_username` (a process runs
    one of them, with its own principal); ``admin`` as :attr:`Settings.kafka_admin_username`,
    or the process's own principal when no administrator is configured."""
    config: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol != "PLAINTEXT":
        user, password = settings.kafka_username, settings.kafka_password
        if role == "admin" and settings.kafka_admin_username is not None:
            user, password = settings.kafka_admin_username, settings.kafka_admin_password
        if user is None or password is None:
            raise ValueError(
                f"no Kafka credentials for the {role} (set JIAYI_KAFKA_USERNAME/PASSWORD"
                + (" or JIAYI_KAFKA_ADMIN_USERNAME/PASSWORD)" if role == "admin" else ")")
            )
        config.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=user,
            sasl_plain_password=password.get_secret_value(),
        )
    if settings.kafka_security_protocol == "SASL_SSL":
        config["ssl_check_hostname"] = True
        if settings.kafka_ssl_cafile is not None:
            config["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return config


def build_admin(settings: Settings, **extra: Any) -> Any:
    """A KafkaAdminClient acting as the administrator (caller closes it)."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        client_id="jiayi-admin", **kafka_client_config(settings, "admin"), **extra
    )


def ensure_topics(settings: Settings, partners: Iterable[UUID] = ()) -> None:
    """Create the exchange's topics if missing (the broker does not auto-create them): the
    dead letters, the platform topic when set, and the inbound and outbound topic of each of
    ``partners`` (:mod:`consumers.topics`)."""
    from consumers.topics import inbound_topic, outbound_topic

    names = [settings.dead_letter_topic, settings.audit_topic]
    if settings.platform_topic:
        names.append(settings.platform_topic)
    prefix = settings.partner_topic_prefix
    for org in partners:
        names += [inbound_topic(prefix, org), outbound_topic(prefix, org)]
    create_topics(settings, names)


def create_topics(settings: Settings, names: Iterable[str]) -> set[str]:
    """Create the topics among ``names`` that do not exist yet; the ones among ``names`` that
    exist afterwards (and this principal may see).

    A principal that may not create topics (the consumer's, the relay's) skips the ones it may
    not create: the administrator makes them (``jiayi partners add``)."""
    import logging

    from kafka.admin import NewTopic
    from kafka.errors import (
        ClusterAuthorizationFailedError,
        TopicAlreadyExistsError,
        TopicAuthorizationFailedError,
    )

    wanted = list(dict.fromkeys(names))
    admin = build_admin(settings)
    try:
        existing = set(admin.list_topics())
        found = {name for name in wanted if name in existing}
        for name in wanted:
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, settings.kafka_partitions, 1)])
                found.add(name)
            except TopicAlreadyExistsError:
                found.add(name)
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                logging.getLogger(__name__).info("not allowed to create topic %s: skipped", name)
    finally:
        admin.close()
    return found


def build_producer(
    settings: Settings, client_id: str, role: KafkaRole = "relay", **extra: Any
) -> Any:
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "delivery_timeout_ms": 120_000,
        "reconnect_backoff_max_ms": 2000,
        **extra,
    }
    return KafkaProducer(**kafka_client_config(settings, role), client_id=client_id, **config)


#: Seconds between two looks at the consumer's lag per partition (when metrics are on).
CONSUMER_LAG_EVERY = 5.0


def build_inbound_consumer(
    settings: Settings, app: CareCoordination | None = None
) -> InboundConsumer:
    from kafka import KafkaConsumer

    from consumers.deadletter import DEAD_LETTER_OVERHEAD, DeadLetters
    from consumers.inbound import InboundConsumer

    consumer = KafkaConsumer(
        **kafka_client_config(settings, "consumer"),
        group_id=settings.consumer_group,
        client_id="jiayi-consume",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.kafka_batch,
        check_crcs=settings.kafka_check_crcs,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        reconnect_backoff_max_ms=2000,
        # A member that dies (SIGKILL, lost host) holds its partitions until its session ends:
        # 10 s rather than the client's 45 s default (the broker's minimum is 6 s).
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        # The subscription is a pattern over every partner's inbound topic: a new partner's
        # topic is picked up at the next metadata refresh.
        metadata_max_age_ms=30_000,
    )
    dead_letters = DeadLetters(
        # a dead letter is at most the maximum message plus its headers; waiting for a topic's
        # metadata is bounded too (DeadLetters retries, then stands a notice in)
        lambda: build_producer(
            settings,
            "jiayi-dead-letters",
            "consumer",
            max_request_size=max(
                1024 * 1024, settings.kafka_max_message_bytes + DEAD_LETTER_OVERHEAD
            ),
            max_block_ms=10_000,
        ),
        settings.dead_letter_topic,
        settings.kafka_max_message_bytes,
    )
    return InboundConsumer(
        app or build_application(settings),
        consumer,
        dead_letters,
        settings.partner_topic_prefix,
        max_records=settings.kafka_batch,
        lag_every=CONSUMER_LAG_EVERY if settings.metrics_enabled else None,
    )


def build_relay(settings: Settings, app: CareCoordination | None = None) -> Relay:
    from consumers.outbound import Relay

    return Relay(
        app or build_application(settings),
        lambda: build_producer(settings, "jiayi-publish"),
        settings.partner_topic_prefix,
        platform=settings.platform_topic,
        ensure_topics=lambda names: create_topics(settings, names),
        leadership=build_relay_leadership(settings),
    )


def build_relay_leadership(settings: Settings) -> Duty:
    """The duty one relay per event store and partner topic prefix holds while it publishes."""
    return build_duty(settings, f"kafka-relay:{settings.partner_topic_prefix}")


#: The duty of following the log into the views (``jiayi projections run``, or the runner
#: inside ``jiayi serve``): one runner per event store works, others stand by.
PROJECTIONS_DUTY = "projections"


def build_duty(
    settings: Settings, duty: str, on_change: Callable[[bool], None] | None = None
) -> Duty:
    """The lock of a single-writer ``duty`` of this deployment (:mod:`runtime.leadership`):
    an advisory lock keyed by ``<schema>:<duty>`` on PostgreSQL, a file beside SQLite."""
    from jiayi.metrics import duty_held

    def changed(held: bool) -> None:
        duty_held(duty, held)  # jiayi_duty_held{duty}: which process holds which duty
        if on_change is not None:
            on_change(held)

    if settings.uses_postgres:
        name = f"{settings.postgres_schema or 'public'}:{duty}"
        return Duty(duty, PostgresLeadership(settings.postgres_dsn(), name), changed)
    return Duty(duty, FileLeadership(settings.data_dir / lock_file_name(duty)), changed)

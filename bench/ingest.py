"""Partner events -> PostgreSQL event store through ``jiayi consume``'s consumer, vs. a raw pipeline.

    make bench-ingest                      # 200,000 messages, a group of 2 consumer processes
    JIAYI_POSTGRES_URL=postgresql://jiayi@127.0.0.1:55432/jiayi \\
    JIAYI_KAFKA_BOOTSTRAP=$(infra/kafka/ensure.sh) JIAYI_KAFKA_USERNAME=jiayi-admin \\
    JIAYI_KAFKA_PASSWORD=$(cat var/kafka/admin.password) \\
    .venv/bin/python bench/ingest.py --messages 200000 --patients 20000 --consumers 2

Prepares a population (one community center, ``--patients`` residents, saved in bulk) in a fresh
PostgreSQL schema, puts ``--messages`` follow-up-recorded CloudEvents (each with a visit note,
``--note``) on a fresh 6-partition topic, then times ``--consumers`` members of one consumer
group, each a process running ``InboundConsumer.run`` as ``jiayi consume`` does (validation,
authorisation, commands through the application's use cases, inbox + offsets + events in one
transaction per partition batch), from a start signal (after their imports and set-up) until
every message is applied. The raw pipeline reads the same messages with kafka-python and COPYs
their values into a table in one process; the ratio says what the exchange's work costs. Also printed: the CPU seconds the
consumers and the whole machine spent meanwhile (PostgreSQL and the broker share the cores).

Personal data is sealed per patient as always (``domain.personal``): the residents' names, ids
and birth dates and every visit's note are stored as tokens, each patient's data key created on
first use and wrapped by a master key made for the run (``JIAYI_MASTER_KEY_FILE``, else
``var/bench/bench_ingest_<tag>.master.key``, deleted with the schema). Issue 14's target is
10,000 events/s or more with it on; the output checks that the stored events hold tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from eventsourcing.utils import get_topic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from masterkey import master_key_file
from psycopg import sql

from consumers.inbound import InboundConsumer
from consumers.messages import partner_event
from consumers.topics import inbound_topic
from domain.common import Actor
from domain.followups import FollowUps
from domain.patients import Patient
from eventstore.keys import INDEX_SUBJECT, KEYS
from eventstore.personal import STORED_MARK
from jiayi import metrics
from jiayi.bootstrap import (
    build_application,
    build_inbound_consumer,
    ensure_topics,
    kafka_client_config,
)
from jiayi.settings import Settings
from projections.events import LogReader

FOLLOWUP = "cn.jiayi.partner.followup.recorded.v2"
NOTE = "血压控制尚可，继续按时服药，低盐饮食，两周后复查。"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def national_id(serial: int) -> str:
    body = f"320106{date(1950, 1, 1) + timedelta(days=serial % 20000):%Y%m%d}{serial % 1000:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def count_events(url: str, schema: str) -> int:
    with psycopg.connect(url) as conn:
        q = sql.SQL("SELECT count(*) FROM {}.carecoordination_events").format(
            sql.Identifier(schema)
        )
        row = conn.execute(q).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument(
        "--consumers", type=int, default=1, help="consumer processes in the group (<= 6)"
    )
    parser.add_argument(
        "--centers", type=int, default=4, help="partner centers, each with its inbound topic"
    )
    parser.add_argument(
        "--no-crc-check", action="store_true", help="both pipelines skip client CRC checks"
    )
    parser.add_argument(
        "--note", default=NOTE, help="each visit's note (personal data: sealed); '' for none"
    )
    parser.add_argument(
        "--metrics",
        choices=["both", "off", "on"],
        default="both",
        help="consumers without and with metrics (a metrics port each, lag per partition, "
        "scraped every second), alternating rounds (both) or only one kind",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds per kind (each on a fresh store and topics)"
    )
    args = parser.parse_args()
    url = os.environ.get("JIAYI_POSTGRES_URL") or "postgresql://jiayi@127.0.0.1:55432/jiayi"
    bootstrap = os.environ.get("JIAYI_KAFKA_BOOTSTRAP") or "127.0.0.1:59092"
    tag = uuid.uuid4().hex[:8]
    made_key = not os.environ.get("JIAYI_MASTER_KEY_FILE", "").strip()
    key_file = master_key_file(f"bench_ingest_{tag}")
    base = Settings(
        master_key_file=key_file,
        postgres_url=url,
        kafka_bootstrap=bootstrap,
        dead_letter_topic=f"bench.{tag}.dead",
        kafka_partitions=6,
        kafka_batch=args.batch,
        kafka_check_crcs=not args.no_crc_check,
    )
    kinds = {"both": [False, True], "off": [False], "on": [True]}[args.metrics]
    rates: dict[bool, list[float]] = {False: [], True: []}
    schemas: list[str] = []
    #: The first round's store (settings, application, centers), for the checks after.
    kept: tuple[Settings, Any, list[uuid.UUID]] | None = None
    today = datetime.now(UTC)
    try:
        # Every round on a store and topics of its own, built alike: a later round must not
        # read longer histories than an earlier one (each adds visits to every patient).
        for n in range(args.rounds):
            # off, on, on, off, ...: a drift over the run (the database's and the broker's
            # housekeeping, other work on the machine) weighs on both kinds alike
            for metered in kinds if n % 2 == 0 else kinds[::-1]:
                label = f"{tag}_{n}{'m' if metered else ''}"
                schema = f"bench_ingest_{label}"
                schemas.append(schema)
                settings = base.model_copy(
                    update={
                        "postgres_schema": schema,
                        "partner_topic_prefix": f"bench.{label}.partner.",
                        "consumer_group": f"bench.{label}",
                    }
                )
                app = build_application(settings)
                centers, patients, home = populate(app, args, today)
                ensure_topics(settings, centers)
                produce(settings, args, patients, home, today, label)
                before = count_events(url, schema)
                jiayi_s, applied, dead = run_consumers(
                    settings, args.consumers, args.messages, metered
                )
                events = count_events(url, schema) - before
                rates[metered].append(events / jiayi_s)
                print(
                    f"jiayi consume ({args.consumers} process{'es' if args.consumers > 1 else ''}"
                    f", metrics {'on' if metered else 'off'}, round {n + 1}): "
                    f"{applied} messages -> {events} events in {jiayi_s:.1f} s: "
                    f"{events / jiayi_s:,.0f} events/s ({applied / jiayi_s:,.0f} messages/s), "
                    f"dead letters: {dead}"
                )
                if kept is None:
                    kept = (settings, app, centers)
                else:
                    app.close()
                    drop_schema(url, schema)
        assert kept is not None
        settings, app, centers = kept
        schema = settings.postgres_schema or ""
        print(encryption(app, url, schema, bool(args.note)))
        best = max(rates[False] or rates[True])
        print(
            f"events/s: {best:,.0f} "
            f"(target >= 10,000 with personal-data encryption on: "
            f"{'met' if best >= 10_000 else 'NOT met'})"
        )
        if rates[False] and rates[True]:
            off, on = statistics.median(rates[False]), statistics.median(rates[True])
            # each round's two runs are neighbours: their ratio is free of the run's drift
            paired = statistics.geometric_mean(
                b / a for a, b in zip(rates[False], rates[True], strict=True)
            )
            met = min(on / off, paired) >= 0.95
            print(
                f"metrics off: {off:,.0f} events/s, on: {on:,.0f} events/s (medians of "
                f"{args.rounds} alternating rounds); ratio on/off {on / off:.3f}, per round "
                f"{paired:.3f} (geometric mean; target >= 0.95: {'met' if met else 'NOT met'})"
            )
        jiayi_s = args.messages / statistics.median(rates[False] or rates[True])

        raw_s = raw_pipeline(settings, url, schema, args.messages, centers)
        print(
            f"raw pipeline (kafka-python + COPY): {args.messages} rows in {raw_s:.1f} s: "
            f"{args.messages / raw_s:,.0f} rows/s"
        )
        print(
            f"ratio jiayi/raw (messages/s): {(args.messages / jiayi_s) / (args.messages / raw_s):.2f}"
        )
    finally:
        if kept is not None:
            kept[1].close()
        for schema in schemas:
            drop_schema(url, schema)
        if made_key:
            key_file.unlink(missing_ok=True)
    return 0


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def populate(
    app: Any, args: argparse.Namespace, today: datetime
) -> tuple[list[uuid.UUID], list[uuid.UUID], dict[uuid.UUID, uuid.UUID]]:
    """``args.centers`` community centers and ``args.patients`` residents, saved in bulk: the
    centers, the patients, each patient's center."""
    centers = [
        app.register_organisation(
            "community_center",
            name=f"鼓楼社区卫生服务中心 {c + 1}",
            district="鼓楼区",
            actor=Actor("setup", uuid.UUID(int=0)),
        ).id
        for c in range(args.centers)
    ]
    t0 = time.perf_counter()
    patients: list[uuid.UUID] = []
    home: dict[uuid.UUID, uuid.UUID] = {}
    for start in range(0, args.patients, 500):
        chunk = [
            Patient.register(
                uuid.uuid4(),
                name="王秀英",
                sex="F",
                birth_date=date(1950, 3, 4),
                national_id=national_id(i),
                phone="13800000000",
                district="鼓楼区",
                center_id=centers[i % len(centers)],
                actor=Actor("registry", centers[i % len(centers)]),
                at=today,
            )
            for i in range(start, min(start + 500, args.patients))
        ]
        app.save(*chunk)
        patients += [p.id for p in chunk]
        home.update((p.id, p.center_id) for p in chunk)
    print(f"population: {len(patients)} patients in {time.perf_counter() - t0:.1f} s")
    return centers, patients, home


def produce(
    settings: Settings,
    args: argparse.Namespace,
    patients: list[uuid.UUID],
    home: dict[uuid.UUID, uuid.UUID],
    today: datetime,
    label: str,
) -> None:
    """``args.messages`` follow-up visits, each on its patient's center's inbound topic."""
    t0 = time.perf_counter()
    producer = KafkaProducer(
        **kafka_client_config(settings, "admin"), linger_ms=20, batch_size=512 * 1024
    )
    day = today.date().isoformat()
    for i in range(args.messages):
        p = patients[i % len(patients)]
        data = {
            "patient_id": str(p),
            "on": day,
            "kind": "face_to_face" if i % 3 else "phone",
            "measurements": {
                "systolic_bp": {"value": 120 + i % 40, "unit": "mmHg"},
                "diastolic_bp": {"value": 80 + i % 15, "unit": "mmHg"},
            },
            "staff_id": f"gp-{i % 40}",
        }
        if args.note:
            data["note"] = args.note
        center = home[p]  # each center writes its own inbound topic
        value = partner_event(FOLLOWUP, center, f"his-{label}-{i}", data, today)
        topic = inbound_topic(settings.partner_topic_prefix, center)
        producer.send(topic, key=str(p).encode(), value=value)
    producer.flush()
    producer.close()
    print(f"produced: {args.messages} partner events in {time.perf_counter() - t0:.1f} s")


def encryption(app: Any, url: str, schema: str, notes: bool) -> str:
    """What says personal-data encryption was on: data keys made, tokens in the events."""
    events = sql.Identifier(schema, "carecoordination_events")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE subject <> %s").format(
                sql.Identifier(schema, KEYS)
            ),
            (INDEX_SUBJECT,),
        ).fetchone()
        keys = int(row[0]) if row else 0
        sealed = {}
        for name, cls in (
            ("registrations", Patient.Registered),
            ("visits", FollowUps.VisitRecorded),
        ):
            found = conn.execute(
                sql.SQL(
                    "SELECT originator_id, originator_version, topic, state FROM {} "
                    "WHERE topic = %s ORDER BY notification_id DESC LIMIT 1"
                ).format(events),
                (get_topic(cls),),
            ).fetchone()
            sealed[name] = found is not None and STORED_MARK in app.mapper.plain_state(*found, None)
    on = keys > 0 and sealed["registrations"] and (sealed["visits"] or not notes)
    return (
        f"personal-data encryption: {'ON' if on else 'OFF?'} ({keys:,} patients' data keys; "
        f"tokens in the last registration: {sealed['registrations']}, "
        f"in the last visit (note): {sealed['visits']})"
    )


def consumer_process(
    settings: Settings, go: Any, done: Any, handled: Any
) -> None:  # pragma: no cover - runs in a child process
    """One member of the group, as ``jiayi consume`` runs it: set up, wait for the start, then
    poll until the parent says every message is handled; ``handled`` = (applied, dead, CPU ms).
    With a metrics port in ``settings``, it serves its metrics there as ``jiayi consume`` does."""
    inbound = build_inbound_consumer(settings)
    served = metrics.serve(settings)
    if served is not None:
        metrics.watch("log", metrics.log_head(LogReader(inbound.app)))
    go.wait()
    cpu = time.process_time()

    def progress(consumer: InboundConsumer) -> None:
        with handled.get_lock():
            handled[0], handled[1] = consumer.applied, consumer.dead
            handled[2] = int((time.process_time() - cpu) * 1000)

    inbound.run(done, progress=progress)
    inbound.consumer.close()
    inbound.app.close()


def run_consumers(
    settings: Settings, n: int, messages: int, metered: bool = False
) -> tuple[float, int, int]:
    """``n`` consumer processes in one group: seconds from the start signal until every message
    is applied (its events committed) or dead-lettered; total applied; total dead-lettered.
    ``metered``: each serves its metrics on a port of its own, scraped every second."""
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Event()
    counters = [ctx.Array("q", 3) for _ in range(n)]
    ports = [free_port() if metered else None for _ in counters]
    procs = [
        ctx.Process(
            target=consumer_process,
            args=(settings.model_copy(update={"metrics_port": port}), go, done, c),
        )
        for c, port in zip(counters, ports, strict=True)
    ]
    scraping = threading.Event()
    scraper = threading.Thread(target=scrape_every_second, args=(ports, scraping), daemon=True)
    for p in procs:
        p.start()
    time.sleep(3)  # imports and set-up, outside the timing as in a running service

    def totals() -> tuple[int, int]:
        return sum(c[0] for c in counters), sum(c[1] for c in counters)

    busy0 = busy_seconds()
    if metered:
        scraper.start()
    t0 = time.perf_counter()
    go.set()
    while sum(totals()) < messages:
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    busy = busy_seconds() - busy0
    scraping.set()
    done.set()
    for p in procs:
        p.join()
    applied, dead = totals()
    cpu = sum(c[2] for c in counters) / 1000
    print(
        f"CPU while consuming: consumers {cpu:.1f} s, whole machine {busy:.1f} s "
        f"of {elapsed * (os.cpu_count() or 1):.1f} s ({os.cpu_count()} cores)"
    )
    return elapsed, applied, dead


def scrape_every_second(ports: list[int | None], stop: threading.Event) -> None:
    """What Prometheus does, more often: read every consumer's metrics each second."""
    while not stop.wait(1.0):
        for port in ports:
            if port is not None:
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


def busy_seconds() -> float:
    """CPU seconds this machine has been busy (all cores, from /proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def raw_pipeline(
    settings: Settings, url: str, schema: str, n: int, centers: list[uuid.UUID]
) -> float:
    consumer = KafkaConsumer(
        **kafka_client_config(settings, "admin"),
        enable_auto_commit=False,
        check_crcs=settings.kafka_check_crcs,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    parts = [
        TopicPartition(inbound_topic(settings.partner_topic_prefix, c), p)
        for c in centers
        for p in range(settings.kafka_partitions)
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    table = sql.Identifier(schema, "raw_ingest")
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (topic text, part int, off bigint, key bytea, value bytea)"
            ).format(table)
        )
        conn.commit()
        t0 = time.perf_counter()
        done = 0
        while done < n:
            polled = consumer.poll(timeout_ms=200, max_records=settings.kafka_batch)
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN").format(table)) as cp:
                for records in polled.values():
                    for r in records:
                        cp.write_row((r.topic, r.partition, r.offset, r.key, r.value))
                        done += 1
            conn.commit()
        elapsed = time.perf_counter() - t0
    consumer.close()
    return elapsed


if __name__ == "__main__":
    sys.exit(main())

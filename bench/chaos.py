"""Chaos run: processes killed and services restarted under a steady load; nothing lost, nothing
applied twice. A benchmark-style run that prints a table, never part of the test suite.

    make chaos                                # about three minutes
    .venv/bin/python bench/chaos.py --rate 10 --messages-rate 10 --settle 5 --outage 5

Sets up, under ``var/chaos/<run>/``, a PostgreSQL cluster and an Apache Kafka broker of its own
(ports 55532 and 59492-59494 by default: never the shared ones, since it restarts them), a
master key, the consumer's and relay's principals (``jiayi partners services``), one community
center registered through the API and made a partner (``jiayi partners add``), and starts the
processes as ``infra/compose.yaml`` runs them: ``jiayi serve`` (``JIAYI_PROJECTIONS_IN_PROCESS=
false``), ``jiayi projections run``, ``jiayi consume`` (two members), ``jiayi publish``. Like the
deployment's ``restart: unless-stopped``, a process that exits is started again (the table
counts the exits nobody asked for).

Load, all the while: API writes over HTTP as a careful client sends them (each command with its
own ``Idempotency-Key``, retried with the same key after a refused connection, a timeout, a 5xx
or ``idempotency-request-in-progress``): patients registered (each with its own resident id
number) and follow-up visits (each with its own note); and partner messages (follow-ups, each
with its own id and note) produced as the center's partner principal into its inbound topic,
sent again with the same id until the broker acknowledges them.

Faults, one after another (a phase each): SIGKILL the API, the projection runner, both consumer
members, the relay (each started again at once); stop PostgreSQL in immediate mode (a crash:
open transactions lost) and start it after ``--outage`` seconds; SIGKILL the broker and start it
after ``--outage`` seconds. Recovered: a write sent after the fault is acknowledged and is both
in the views and published by the relay, and a partner message sent after the fault is
applied. At the end the load stops, everything catches up, the whole log is read (personal
fields opened with the master key) and each command and message is matched with the events it
caused by its resident id number or note: "lost" is one acknowledged (2xx, or by the broker)
with no event, "twice" one with more than one. Every position of the log must also be on the
platform topic the relay publishes to (at least once).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, LiteralString
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from psycopg import sql  # noqa: E402

from consumers.messages import partner_event  # noqa: E402
from consumers.topics import inbound_topic  # noqa: E402

FOLLOWUP = "cn.jiayi.partner.followup.recorded.v2"
SCHEMA = "chaos"
PLATFORM = "jiayi.chaos.platform"
ZONE = ZoneInfo("Asia/Shanghai")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def national_id(serial: int) -> str:
    """A valid resident id number (checksum included), one per serial up to 10 million."""
    born = date(1940, 1, 1) + timedelta(days=serial % 20000)
    body = f"32{serial // 10000 % 10000:04d}{born:%Y%m%d}{serial % 1000:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


# --- the private services --------------------------------------------------------------------


class Services:
    """A PostgreSQL cluster and a Kafka broker of this run's own, started with the repository's
    ``infra/*/ensure.sh`` and stopped at the end."""

    def __init__(self, run_dir: Path, pg_port: int, kafka_port: int) -> None:
        self.pg_env = dict(
            os.environ, JIAYI_PG_PORT=str(pg_port), JIAYI_PG_DIR=str(run_dir / "postgres")
        )
        self.kafka_env = dict(
            os.environ,
            JIAYI_KAFKA_PORT=str(kafka_port),
            JIAYI_KAFKA_CONTROLLER_PORT=str(kafka_port + 1),
            JIAYI_KAFKA_BROKER_PORT=str(kafka_port + 2),
            JIAYI_KAFKA_DIR=str(run_dir / "kafka"),
            JIAYI_KAFKA_HEAP="512m",
        )
        self.kafka_dir = run_dir / "kafka"
        self.pg_dir = run_dir / "postgres"

    def start_postgres(self) -> str:
        out = subprocess.run(
            [ROOT / "infra/postgres/ensure.sh"], env=self.pg_env, check=True, capture_output=True
        )
        return out.stdout.decode().strip()

    def crash_postgres(self) -> None:
        """``pg_ctl stop -m immediate``: the server quits without a clean shutdown (a crash:
        recovery from the WAL at the next start)."""
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        cmd = [str(pg_bin / "pg_ctl"), "-D", str(self.pg_dir), "-m", "immediate", "stop"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd="/")

    def stop_postgres(self) -> None:
        subprocess.run([ROOT / "infra/postgres/stop.sh"], env=self.pg_env, capture_output=True)

    def start_kafka(self) -> str:
        out = subprocess.run(
            [ROOT / "infra/kafka/ensure.sh"], env=self.kafka_env, check=True, capture_output=True
        )
        return out.stdout.decode().strip()

    def kill_kafka(self) -> None:
        pid = int((self.kafka_dir / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid):
            time.sleep(0.05)

    def stop_kafka(self) -> None:
        subprocess.run([ROOT / "infra/kafka/stop.sh"], env=self.kafka_env, capture_output=True)

    def admin_password(self) -> str:
        return (self.kafka_dir / "admin.password").read_text().strip()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


# --- the jiayi processes ---------------------------------------------------------------------


@dataclass
class Process:
    """One jiayi process, started again whenever it exits (as ``restart: unless-stopped``)."""

    name: str
    kind: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    killed: int = 0  # exits we caused
    exits: list[tuple[float, int]] = field(default_factory=list)  # (when, status) unasked

    def start(self) -> None:
        out = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "jiayi.cli", *self.argv],
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.killed += 1
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Supervisor(threading.Thread):
    """Starts a process again one second after it exits; counts the exits it was not asked for."""

    def __init__(self, processes: list[Process]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.wait(0.2):
            with self.lock:
                for p in self.processes:
                    if p.popen is None or p.popen.poll() is None:
                        continue
                    status = p.popen.returncode
                    if status != -signal.SIGKILL or p.killed == 0:
                        p.exits.append((time.monotonic(), status))
                        log(f"{p.name} exited by itself (status {status}): starting it again")
                    else:
                        p.killed -= 1
                    time.sleep(0.5)
                    p.start()

    def kill(self, kind: str) -> None:
        with self.lock:
            for p in self.processes:
                if p.kind == kind:
                    p.kill()

    def stop_all(self) -> None:
        self.halt.set()
        self.join()
        for p in self.processes:
            p.stop()


# --- the load --------------------------------------------------------------------------------


@dataclass
class Op:
    """One command (``api``) or partner message (``message``) and what became of it."""

    kind: str
    key: str  # the Idempotency-Key, or the message id
    marker: str  # what finds its event in the log: a resident id number or a note
    sent: float  # first attempt (monotonic)
    acked: float | None = None
    position: int | None = None
    refused: str | None = None  # a 4xx the client does not retry (status and code)


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: list[Op] = []
        self.answers: list[tuple[float, str]] = []  # (when, status or "connection"/"timeout")

    def new(self, op: Op) -> Op:
        with self.lock:
            self.ops.append(op)
        return op

    def answer(self, what: str) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), what))

    def first_acked_after(self, kind: str, t0: float) -> Op | None:
        with self.lock:
            done = [o for o in self.ops if o.kind == kind and o.sent >= t0 and o.acked]
        return min(done, key=lambda o: o.acked or 0.0) if done else None


class ApiWriter(threading.Thread):
    """Commands over HTTP at ``rate`` a second, each retried with its key until it is answered
    with something other than a refused connection, a timeout, a 5xx or "in progress"."""

    serials = itertools.count(1)

    def __init__(
        self, base: str, token: str, patients: list[str], rate: float, ledger: Ledger, tag: str
    ) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.patients, self.rate = base, token, patients, rate
        self.ledger, self.tag = ledger, tag
        self.halt = threading.Event()
        self.give_up = 180.0

    def run(self) -> None:
        client = httpx.Client(base_url=self.base, timeout=15.0)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.halt.is_set():
            next_at = max(next_at + interval, time.monotonic() - interval)
            time.sleep(max(0.0, next_at - time.monotonic()))
            serial = next(self.serials)
            if serial % 2:
                path, marker = "/patients", national_id(serial)
                body: dict[str, Any] = {
                    "name": "王秀英",
                    "sex": "F",
                    "birth_date": "1950-03-04",
                    "national_id": marker,
                    "phone": "13800000000",
                }
            else:
                marker = f"chaos-api-{self.tag}-{serial}"
                path = f"/patients/{random.choice(self.patients)}/follow-ups"
                body = {
                    "on": datetime.now(ZONE).date().isoformat(),
                    "kind": "phone",
                    "note": marker,
                }
            op = self.ledger.new(Op("api", f"chaos-{self.tag}-{serial}", marker, time.monotonic()))
            self.send(client, path, body, op)
        client.close()

    def send(self, client: httpx.Client, path: str, body: dict[str, Any], op: Op) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": op.key}
        delay = 0.2
        while time.monotonic() - op.sent < self.give_up:
            try:
                r = client.post(path, json=body, headers=headers)
            except httpx.TimeoutException:
                self.ledger.answer("timeout")
            except httpx.TransportError:
                self.ledger.answer("connection")
            else:
                self.ledger.answer(str(r.status_code))
                if r.is_success:
                    op.acked, op.position = time.monotonic(), int(r.json()["position"])
                    return
                code = r.json().get("code") if r.content else None
                if r.status_code < 500 and code != "idempotency-request-in-progress":
                    op.refused = f"{r.status_code} {code}"
                    return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)


class PartnerWriter(threading.Thread):
    """Follow-ups as the center's partner system sends them, ``rate`` a second, each sent again
    (same id) until the broker acknowledges it."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        center: uuid.UUID,
        patients: list[str],
        rate: float,
        ledger: Ledger,
        tag: str,
    ) -> None:
        super().__init__(daemon=True)
        self.config, self.topic, self.center, self.patients = config, topic, center, patients
        self.rate, self.ledger, self.tag = rate, ledger, tag
        self.halt = threading.Event()
        self.producer: KafkaProducer | None = None

    def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        for serial in itertools.count(1):
            if self.halt.is_set():
                break
            next_at = max(next_at + interval, time.monotonic() - interval)
            time.sleep(max(0.0, next_at - time.monotonic()))
            patient = self.patients[serial % len(self.patients)]
            note = f"chaos-msg-{self.tag}-{serial}"
            now = datetime.now(ZONE)
            data = {
                "patient_id": patient,
                "on": now.date().isoformat(),
                "kind": "phone",
                "note": note,
            }
            op = self.ledger.new(
                Op("message", f"chaos-{self.tag}-{serial}", note, time.monotonic())
            )
            value = partner_event(FOLLOWUP, self.center, op.key, data, now)
            self.send(patient.encode(), value, op)
        if self.producer is not None:
            self.producer.close(timeout=5)

    def send(self, key: bytes, value: bytes, op: Op) -> None:
        while time.monotonic() - op.sent < 180:
            try:
                if self.producer is None:
                    self.producer = KafkaProducer(
                        **self.config,
                        acks="all",
                        request_timeout_ms=5000,
                        max_block_ms=5000,
                        reconnect_backoff_max_ms=1000,
                    )
                self.producer.send(self.topic, key=key, value=value).get(timeout=15)
                op.acked = time.monotonic()
                return
            except Exception:  # any failure: a partner sends again
                self.ledger.answer("kafka")
                if self.producer is not None:
                    with contextlib.suppress(Exception):
                        self.producer.close(timeout=0)
                    self.producer = None
                time.sleep(1.0)


# --- watching the store ----------------------------------------------------------------------


class Store:
    """Positions read straight from the private PostgreSQL (None while it does not answer)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, statement: LiteralString, *args: Any) -> Any:
        with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))
            row = conn.execute(statement, args).fetchone()
        return row[0] if row else None

    def positions(self) -> tuple[int, int, int] | None:
        """(log, views, relay) positions."""
        try:
            head = self.query(
                "SELECT coalesce(max(notification_id), 0) FROM carecoordination_events"
            )
            views = self.query("SELECT coalesce(min(position), 0) FROM projection_tracking")
            relay = self.query(
                "SELECT coalesce(max(notification_id), 0) FROM carecoordination_tracking"
                " WHERE application_name LIKE 'kafka-relay:%%'"
            )
        except psycopg.Error:
            return None
        return int(head), int(views), int(relay)

    def applied(self, message_id: str) -> bool:
        try:
            return bool(
                self.query("SELECT count(*) FROM carecoordination_inbox WHERE id = %s", message_id)
            )
        except psycopg.Error:
            return False


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    recovered: float | None = None  # seconds after the fault
    note: str = ""
    steps: dict[str, float] = field(default_factory=dict)  # seconds after the fault, each


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "jiayi.cli", *args], env=env, cwd=ROOT, capture_output=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"jiayi {' '.join(args[:2])}: {out.stderr.decode()[-2000:]}")
    return out.stdout.decode()


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.25) -> float | None:
    """Seconds until ``condition`` held, or None after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if condition():
            return time.monotonic() - t0
        time.sleep(poll)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10, help="API commands a second")
    parser.add_argument("--messages-rate", type=float, default=10, help="partner messages a second")
    parser.add_argument("--writers", type=int, default=3, help="API client threads")
    parser.add_argument("--warm-up", type=float, default=10, help="seconds of load before faults")
    parser.add_argument("--settle", type=float, default=5, help="seconds after each recovery")
    parser.add_argument("--outage", type=float, default=5, help="seconds PostgreSQL/Kafka are down")
    parser.add_argument("--recover-timeout", type=float, default=90)
    parser.add_argument("--pg-port", type=int, default=55532)
    parser.add_argument("--kafka-port", type=int, default=59492, help="and the two after it")
    parser.add_argument("--http-port", type=int, default=58480)
    parser.add_argument("--keep", action="store_true", help="keep var/chaos/<run> afterwards")
    args = parser.parse_args()

    tag = time.strftime("%Y%m%d-%H%M%S")
    run_dir = ROOT / "var" / "chaos" / tag
    run_dir.mkdir(parents=True)
    log(f"run directory {run_dir}")
    services = Services(run_dir, args.pg_port, args.kafka_port)
    try:
        url = services.start_postgres()
        bootstrap = services.start_kafka()
        log(f"private PostgreSQL {url}, Kafka {bootstrap}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        return run(args, tag, run_dir, services, url, bootstrap)
    finally:
        log("stopping the private PostgreSQL and Kafka")
        services.stop_kafka()
        services.stop_postgres()
        if not args.keep:
            shutil.rmtree(run_dir / "postgres", ignore_errors=True)
            shutil.rmtree(run_dir / "kafka", ignore_errors=True)


def run(
    args: argparse.Namespace,
    tag: str,
    run_dir: Path,
    services: Services,
    url: str,
    bootstrap: str,
) -> int:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    base_env.update(
        PYTHONPATH=str(ROOT),
        JIAYI_POSTGRES_URL=url,
        JIAYI_POSTGRES_SCHEMA=SCHEMA,
        JIAYI_DATA_DIR=str(run_dir / "data"),
        JIAYI_MASTER_KEY_FILE=str(run_dir / "master.key"),
        JIAYI_AUDIT_SEAL_LOG=str(run_dir / "seals.jsonl"),
        JIAYI_PLATFORM_TOPIC=PLATFORM,
    )
    kafka_env = dict(base_env, JIAYI_KAFKA_BOOTSTRAP=bootstrap)  # with a principal's credentials
    admin_env = dict(
        kafka_env,
        JIAYI_KAFKA_ADMIN_USERNAME="jiayi-admin",
        JIAYI_KAFKA_ADMIN_PASSWORD=services.admin_password(),
    )
    cli(base_env, "keys", "create", str(run_dir / "master.key"))
    admin_token = cli(base_env, "tokens", "issue", "--role", "administrator", "--staff", "chaos")
    admin_token = admin_token.strip().splitlines()[-1]
    passwords = json.loads(cli(admin_env, "partners", "--json", "services"))

    api_env = dict(base_env, JIAYI_PROJECTIONS_IN_PROCESS="false")
    consumer_env = dict(
        kafka_env,
        JIAYI_KAFKA_USERNAME="jiayi-consumer",
        JIAYI_KAFKA_PASSWORD=passwords["jiayi-consumer"],
    )
    relay_env = dict(
        kafka_env, JIAYI_KAFKA_USERNAME="jiayi-relay", JIAYI_KAFKA_PASSWORD=passwords["jiayi-relay"]
    )
    logs = run_dir / "logs"
    logs.mkdir()
    port = str(args.http_port)
    processes = [
        Process("api", "api", ["serve", "--port", port], api_env, logs / "api.log"),
        Process("projections", "projections", ["projections", "run"], base_env, logs / "proj.log"),
        Process("consumer-1", "consumer", ["consume"], consumer_env, logs / "consumer-1.log"),
        Process("consumer-2", "consumer", ["consume"], consumer_env, logs / "consumer-2.log"),
        Process("relay", "relay", ["publish"], relay_env, logs / "relay.log"),
    ]
    base = f"http://127.0.0.1:{port}"
    processes[0].start()
    supervisor = Supervisor(processes)
    try:
        return drive(
            args,
            tag,
            services,
            url,
            bootstrap,
            base,
            admin_token,
            admin_env,
            base_env,
            processes,
            supervisor,
        )
    finally:
        log("stopping the jiayi processes")
        supervisor.stop_all()
        log(f"process logs in {logs}")


def drive(
    args: argparse.Namespace,
    tag: str,
    services: Services,
    url: str,
    bootstrap: str,
    base: str,
    admin_token: str,
    admin_env: dict[str, str],
    base_env: dict[str, str],
    processes: list[Process],
    supervisor: Supervisor,
) -> int:
    def api_up() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(base + "/health", timeout=1).status_code == 200
        return False

    if wait_until(api_up, 60) is None:
        raise RuntimeError("the API did not start (see logs/api.log)")
    http = httpx.Client(base_url=base, timeout=30)
    r = http.post(
        "/organisations",
        json={"kind": "community_center", "name": "鼓楼社区卫生服务中心", "district": "鼓楼区"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    r.raise_for_status()
    center = uuid.UUID(r.json()["id"])
    partner = json.loads(cli(admin_env, "partners", "--json", "add", str(center)))
    staff = (
        cli(
            base_env,
            "tokens",
            "issue",
            "--role",
            "center_staff",
            "--staff",
            "gp-1",
            "--org",
            str(center),
        )
        .strip()
        .splitlines()[-1]
    )
    auth = {"Authorization": f"Bearer {staff}"}
    patients = []
    for i in range(40):
        body = {
            "name": "李建国",
            "sex": "M",
            "birth_date": "1948-05-06",
            "national_id": national_id(9_000_000 + i),
            "phone": "13900000000",
        }
        r = http.post("/patients", json=body, headers=auth)
        r.raise_for_status()
        patients.append(r.json()["id"])
    http.close()
    log(f"center {center} (a partner), {len(patients)} patients for follow-ups; starting workers")
    for p in processes[1:]:
        p.start()
    supervisor.start()

    ledger = Ledger()
    store = Store(url)
    writers = [
        ApiWriter(base, staff, patients, args.rate / args.writers, ledger, tag)
        for _ in range(args.writers)
    ]
    partner_config = {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": partner["sasl.username"],
        "sasl_plain_password": partner["sasl.password"],
    }
    topic = inbound_topic("jiayi.partner.", center)
    sender = PartnerWriter(partner_config, topic, center, patients, args.messages_rate, ledger, tag)
    loads: list[ApiWriter | PartnerWriter] = [*writers, sender]
    for t in loads:
        t.start()

    phases = [Phase("none (steady load)", time.monotonic())]

    def recovered_since(t0: float, phase: Phase) -> bool:
        """Work sent from ``t0`` on has gone all the way: a write acknowledged, in the views
        and published; a partner message applied. Notes when each first held."""
        write = ledger.first_acked_after("api", t0)
        message = ledger.first_acked_after("message", t0)
        positions = store.positions()
        now = time.monotonic() - phase.start
        if write is not None and write.position is not None and positions is not None:
            phase.steps.setdefault("write", (write.acked or 0.0) - phase.start)
            _, views, relay = positions
            if views >= write.position:
                phase.steps.setdefault("views", now)
            if relay >= write.position:
                phase.steps.setdefault("relay", now)
        if message is not None and store.applied(message.key):
            phase.steps.setdefault("message", now)
        return len(phase.steps) == 4

    if (
        wait_until(lambda: recovered_since(phases[0].start, phases[0]), args.recover_timeout)
        is None
    ):
        phases[0].note = "never flowing"
    time.sleep(args.warm_up)

    def kill(kind: str) -> Callable[[], None]:
        return lambda: supervisor.kill(kind)

    def restart_postgres() -> None:
        services.crash_postgres()
        time.sleep(args.outage)
        services.start_postgres()

    def restart_kafka() -> None:
        services.kill_kafka()
        time.sleep(args.outage)
        services.start_kafka()

    faults: list[tuple[str, Callable[[], None]]] = [
        ("SIGKILL api", kill("api")),
        ("SIGKILL projections", kill("projections")),
        ("SIGKILL consumers (both)", kill("consumer")),
        ("SIGKILL relay", kill("relay")),
        ("PostgreSQL crash + restart", restart_postgres),
        ("Kafka SIGKILL + restart", restart_kafka),
    ]
    for name, inject in faults:
        phases[-1].end = time.monotonic()
        phase = Phase(name, time.monotonic())
        phases.append(phase)
        positions = store.positions()
        log(f"fault: {name} (log at {positions[0] if positions else '?'})")
        inject()
        # only work sent once the fault is in place (a killed process dead, a service back)
        took = wait_until(partial(recovered_since, time.monotonic(), phase), args.recover_timeout)
        if took is None:
            phase.note = f"not recovered in {args.recover_timeout:.0f} s"
            log(f"  not recovered after {args.recover_timeout:.0f} s")
        else:
            phase.recovered = time.monotonic() - phase.start
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in phase.steps.items())
            log(f"  recovered after {phase.recovered:.1f} s ({steps})")
        time.sleep(args.settle)
    phases[-1].end = time.monotonic()

    log("stopping the load; waiting for every acknowledged write and message to be followed")
    for t in loads:
        t.halt.set()
    for t in loads:
        t.join()
    acked_messages = [o for o in ledger.ops if o.kind == "message" and o.acked]
    last_message = max(acked_messages, key=lambda o: o.acked or 0.0) if acked_messages else None

    def drained() -> bool:
        positions = store.positions()
        if positions is None:
            return False
        head, views, relay = positions
        return (
            views == head
            and relay == head
            and (last_message is None or store.applied(last_message.key))
        )

    if wait_until(drained, 180) is None:
        log("not everything caught up after 180 s (counting anyway)")
    time.sleep(3)  # a message still in flight on another partition

    counts, head = count_effects(base_env)
    dead = dead_letters(bootstrap, services.admin_password())
    missing = unpublished(bootstrap, services.admin_password(), head, base_env)
    exits = [(t, p.name, status) for p in processes for t, status in p.exits]
    report(phases, ledger, counts, dead, missing, exits, head)
    lost = sum(1 for o in ledger.ops if o.acked and counts[o.marker] == 0)
    twice = sum(1 for o in ledger.ops if counts[o.marker] > 1)
    return 1 if lost or twice or missing else 0


def count_effects(env: dict[str, str]) -> tuple[Counter[str], int]:
    """How many events each marker (resident id number, note) has in the whole log, read
    through the application (personal fields opened with the master key); and the log's head."""
    from jiayi.bootstrap import build_application
    from jiayi.settings import Settings

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("JIAYI_")})
    try:
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app = build_application(settings)
    counts: Counter[str] = Counter()
    head, start = 0, 1
    try:
        while True:
            page = app.recorder.select_notifications(start=start, limit=1000)
            if not page:
                break
            for n in page:
                head = n.id
                if n.topic.endswith(":Patient.Registered"):
                    counts[app.mapper.to_domain_event(n).national_id] += 1  # type: ignore[attr-defined]
                elif n.topic.endswith(":FollowUps.VisitRecorded"):
                    counts[app.mapper.to_domain_event(n).note] += 1  # type: ignore[attr-defined]
            start = page[-1].id + 1
    finally:
        app.close()
    return counts, head


def _read_topic(bootstrap: str, password: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="jiayi-admin",
        sasl_plain_password=password,
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in parts):
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        return records
    finally:
        consumer.close()


def dead_letters(bootstrap: str, password: str) -> Counter[str]:
    """Dead letters by ``jiayi.error.code``."""
    codes: Counter[str] = Counter()
    for r in _read_topic(bootstrap, password, "jiayi.dead-letters"):
        headers = dict(r.headers or [])
        codes[headers.get("jiayi.error.code", b"?").decode()] += 1
    return codes


def unpublished(bootstrap: str, password: str, head: int, env: dict[str, str]) -> list[int]:
    """Positions of the log (1..head, less the gaps rolled-back inserts leave) that the relay
    never published on the platform topic."""
    seen = {
        int(json.loads(r.value)["sequence"]) for r in _read_topic(bootstrap, password, PLATFORM)
    }
    with psycopg.connect(env["JIAYI_POSTGRES_URL"]) as conn:
        rows = conn.execute(
            sql.SQL("SELECT notification_id FROM {}.carecoordination_events").format(
                sql.Identifier(SCHEMA)
            )
        ).fetchall()
    return sorted(int(r[0]) for r in rows if int(r[0]) not in seen)


def report(
    phases: list[Phase],
    ledger: Ledger,
    counts: Counter[str],
    dead: Counter[str],
    missing: list[int],
    exits: list[tuple[float, str, int]],
    head: int,
) -> None:
    header = (
        f"{'fault':<28} {'sent':>6} {'acked':>6} {'lost':>5} {'twice':>6} {'5xx≠503':>8}"
        f" {'503':>5} {'refused':>8} {'exits':>6} {'recover s':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    for ph in phases:
        ops = [o for o in ledger.ops if ph.start <= o.sent < ph.end]
        answers = [a for t, a in ledger.answers if ph.start <= t < ph.end]
        fives = sum(1 for a in answers if a.isdigit() and int(a) >= 500 and a != "503")
        refused = sum(1 for a in answers if a in ("connection", "timeout", "kafka"))
        n_exits = sum(1 for t, _, _ in exits if ph.start <= t < ph.end)
        recover = "-" if ph.recovered is None else f"{ph.recovered:.1f}"
        if ph.steps and ph.recovered is not None:
            slowest = max(ph.steps, key=lambda k: ph.steps[k])
            ph.note = ph.note or f"last: {slowest}"
        print(
            f"{ph.name:<28} {len(ops):>6} {sum(1 for o in ops if o.acked):>6}"
            f" {sum(1 for o in ops if o.acked and counts[o.marker] == 0):>5}"
            f" {sum(1 for o in ops if counts[o.marker] > 1):>6} {fives:>8}"
            f" {answers.count('503'):>5} {refused:>8} {n_exits:>6} {recover:>10}"
            + (f"  ({ph.note})" if ph.note else "")
        )
    api = [o for o in ledger.ops if o.kind == "api"]
    msgs = [o for o in ledger.ops if o.kind == "message"]
    print()
    print(
        f"API commands: {len(api)} sent, {sum(1 for o in api if o.acked)} acknowledged, "
        f"{sum(1 for o in api if o.refused)} refused (4xx: "
        f"{dict(Counter(o.refused for o in api if o.refused))}), "
        f"{sum(1 for o in api if not o.acked and not o.refused)} unanswered; "
        f"unacknowledged but applied: {sum(1 for o in api if not o.acked and counts[o.marker])}"
    )
    print(
        f"partner messages: {len(msgs)} sent, {sum(1 for o in msgs if o.acked)} acknowledged "
        f"by the broker; dead letters: {sum(dead.values())} {dict(dead) if dead else ''}"
    )
    print(
        f"log: {head} events; not published by the relay: {len(missing)}"
        + (f" (first: {missing[:10]})" if missing else "")
    )
    for t, name, status in exits:
        when = next((ph.name for ph in phases if ph.start <= t < ph.end), "?")
        print(f"unasked exit: {name} (status {status}) during '{when}'")
    print(
        "lost: acknowledged (2xx, or by the broker) with no event in the log; twice: more than "
        "one event; 5xx≠503 and 503: API answers during the phase; refused: connections refused "
        "or timed out (API) and failed sends (partner); exits: processes that exited by "
        "themselves; recover: from the fault until a write sent after it was acknowledged, in "
        "the views and published, and a message sent after it applied (last: which came last)"
    )


if __name__ == "__main__":
    sys.exit(main())

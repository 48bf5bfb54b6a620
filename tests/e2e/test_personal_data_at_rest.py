"""Personal data at rest, byte by byte (issue 14's acceptance criterion): after a demo city and a
full journey over HTTP, on SQLite and on PostgreSQL, a scan of everything the deployment wrote
finds none of the demo's or the journey's names, national ids, phone numbers or free text in
plain text, nor any bearer token the journey used.

Everything written: every file under the data directory (the SQLite file, its -wal/-shm, the
as-of replays, the audit seal log) read as raw bytes and, for SQLite databases, row by row; on
PostgreSQL every table of the test's schema and of its as-of replay schemas (events, views,
replays, idempotency records, access log, tokens), as ``COPY`` text and as the raw bytes of its
binary columns; and the stdout/stderr of the two processes (``jiayi demo``, ``jiayi serve``).

The needles come from the application (the mapper opens the tokens): every demo patient's
name, national id and phone and every text of a personal field of any event (reasons,
summaries, prescriptions, notes), plus the journey's own values. Values are looked for as
UTF-8 and as JSON's ``\\uXXXX`` escapes. The scan proves it can see: organisation names (not
personal) are found in the same bytes, and a plain copy of the needles is found in full.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from psycopg import sql

from api.database import SideStore
from api.tokens import Role, TokenStore
from domain.personal import PERSONAL_FIELDS
from jiayi.bootstrap import build_application
from jiayi.settings import Settings
from tests.e2e.server import bearer, free_port
from tests.world import national_id

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
DEMO_PATIENTS = 300

# The journey's patient and free text: values no demo or fixture uses.
JOURNEY_NAME = "欧阳慕雪"
JOURNEY_BIRTH = date(1947, 11, 23)
JOURNEY_NATIONAL_ID = national_id(JOURNEY_BIRTH, 731)
JOURNEY_PHONE = "13712349876"
JOURNEY_TEXT = {
    "reason": "夜间阵发性胸闷伴左臂麻木三周",
    "diagnosis": "疑似不稳定型心绞痛待排",
    "accept note": "请家属携带旧病历与心电图",
    "summary": "冠脉支架术后恢复良好准予出院",
    "drug": "替格瑞洛片九十毫克",
    "rehabilitation": "心脏康复操每日两次散步半小时",
    "visit note": "家属陪同复诊情绪稳定未诉胸痛",
}


# --- the scanner -------------------------------------------------------------------------


@dataclass
class Needles:
    """What must not be found (value -> kind), sorted by how they are looked for: digit
    strings (national ids, phones), texts without ASCII (names, Chinese free text) and the
    rest (mixed text), each found in one pass over the bytes."""

    kinds: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, value: str) -> None:
        value = value.strip()
        # not dates, moments or short numbers: those are everywhere, and not personal alone
        if (len(value) >= 2 and not re.fullmatch(r"[\d\-: T.+]*", value)) or len(value) >= 11:
            self.kinds.setdefault(value, kind)

    @property
    def digits(self) -> dict[str, str]:
        return {v: k for v, k in self.kinds.items() if re.fullmatch(r"\d+[\dX]", v)}

    @property
    def wide(self) -> dict[str, str]:
        return {v: k for v, k in self.kinds.items() if all(ord(c) > 127 for c in v)}

    @property
    def mixed(self) -> dict[str, str]:
        d, w = self.digits, self.wide
        return {v: k for v, k in self.kinds.items() if v not in d and v not in w}


_DIGIT_RUN = re.compile(rb"[0-9X]{11,}")
_WIDE_RUN = re.compile(rb"[\x80-\xff]{4,}")
# JSON's escapes, also as PostgreSQL's COPY text writes them (the backslash doubled)
_ESCAPED_RUN = re.compile(rb"(?:\\{1,2}u[0-9a-fA-F]{4})+")


def _escaped(value: str) -> list[bytes]:
    plain = json.dumps(value, ensure_ascii=False)[1:-1]
    ascii_ = json.dumps(value)[1:-1]
    forms = {plain.encode(), ascii_.encode(), ascii_.upper().replace("\\U", "\\u").encode()}
    forms.add(ascii_.replace("\\", "\\\\").encode())
    return sorted(forms)


class Scanner:
    def __init__(self, needles: Needles) -> None:
        self.digits = needles.digits
        self.wide = needles.wide
        self.digit_lengths = sorted({len(v) for v in self.digits})
        self.wide_lengths = sorted({len(v) for v in self.wide})
        self.mixed = [(form, kind) for v, kind in needles.mixed.items() for form in _escaped(v)]

    def _wide_in(self, text: str) -> Iterator[str]:
        for n in self.wide_lengths:
            for i in range(len(text) - n + 1):
                kind = self.wide.get(text[i : i + n])
                if kind is not None:
                    yield kind

    def scan(self, data: bytes) -> set[str]:
        """The kinds of needle found in ``data`` (never the values)."""
        found: set[str] = set()
        for run in _DIGIT_RUN.findall(data):
            text = run.decode()
            for n in self.digit_lengths:
                for i in range(len(text) - n + 1):
                    kind = self.digits.get(text[i : i + n])
                    if kind is not None:
                        found.add(kind)
        for run in _WIDE_RUN.findall(data):
            found.update(self._wide_in(run.decode("utf-8", "ignore")))
        for run in _ESCAPED_RUN.findall(data):
            units = re.findall(rb"u([0-9a-fA-F]{4})", run)
            raw = b"".join(int(u, 16).to_bytes(2, "big") for u in units)
            found.update(self._wide_in(raw.decode("utf-16-be", "ignore")))
        for form, kind in self.mixed:
            if form in data:
                found.add(kind)
        return found


@dataclass
class Findings:
    scanner: Scanner
    #: where (file, table, log) -> kinds of needle found there
    leaks: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    places: list[str] = field(default_factory=list)

    def scan(self, where: str, data: bytes) -> None:
        self.places.append(where)
        found = self.scanner.scan(data)
        if found:
            self.leaks[where] |= found


# --- what the deployment wrote ---------------------------------------------------------------


def _sqlite_rows(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every table of a SQLite file, its rows' values as bytes (text as UTF-8)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = bytes
    try:
        tables = [r[0].decode() for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]  # fmt: skip
        for table in tables:
            chunks = []
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    chunks.append(value if isinstance(value, bytes) else str(value).encode())
            yield table, b"\n".join(chunks)
    finally:
        conn.close()


def scan_data_dir(findings: Findings, data_dir: Path) -> list[Path]:
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    for path in files:
        findings.scan(f"file {path.relative_to(data_dir)}", path.read_bytes())
    for path in files:
        if path.read_bytes()[:16] == b"SQLite format 3\x00":
            for table, data in _sqlite_rows(path):
                findings.scan(f"sqlite {path.relative_to(data_dir)} table {table}", data)
    return files


def postgres_schemas(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = %s OR starts_with(nspname, %s)"
        " ORDER BY nspname",
        (schema, f"{schema}_asof_"),
    ).fetchall()
    return [r[0] for r in rows]


def scan_postgres(findings: Findings, url: str, schema: str) -> dict[str, list[str]]:
    """Every table of ``schema`` and its replay schemas: COPY text, and raw binary columns."""
    tables: dict[str, list[str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for ns in postgres_schemas(conn, schema):
            names = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " AND table_type = 'BASE TABLE' ORDER BY table_name",
                (ns,),
            ).fetchall()
            tables[ns] = [n[0] for n in names]
            for (name,) in names:
                qualified = sql.Identifier(ns, name)
                where = f"postgres {'asof' if ns != schema else 'schema'} {ns}.{name}"
                text = bytearray()
                with conn.cursor().copy(
                    sql.SQL("COPY (SELECT * FROM {}) TO STDOUT").format(qualified)
                ) as copy:
                    for chunk in copy:
                        text += chunk
                findings.scan(where, bytes(text))
                binary = conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                    " AND table_name = %s AND data_type = 'bytea'",
                    (ns, name),
                ).fetchall()
                for (column,) in binary:
                    values = conn.execute(
                        sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), qualified)
                    ).fetchall()
                    raw = b"\n".join(bytes(v[0]) for v in values if v[0] is not None)
                    findings.scan(f"{where}.{column} (bytes)", raw)
    return tables


# --- the processes -----------------------------------------------------------------------


def child_env(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_POSTGRES_URL=settings.postgres_dsn() if settings.uses_postgres else "",
        JIAYI_POSTGRES_SCHEMA=settings.postgres_schema or "",
        JIAYI_DATA_DIR=str(settings.data_dir),
        JIAYI_MASTER_KEY_FILE=str(settings.master_key_path),
        JIAYI_HTTP_PORT=str(port),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def jiayi(*args: str) -> list[str]:
    return [sys.executable, "-m", "jiayi.cli", *args]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """A clean stop (SIGTERM, as a service manager sends): the access log is written."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise


def start_server(settings: Settings, logs: Path) -> Server:
    port = free_port()
    out = (logs / "serve.stdout").open("wb")
    err = (logs / "serve.stderr").open("wb")
    process = subprocess.Popen(
        jiayi("serve", "--demo-patients", "0", "--port", str(port)),
        env=child_env(settings, port),
        cwd=ROOT,
        stdout=out,
        stderr=err,
    )
    out.close()
    err.close()
    server = Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"jiayi serve exited with {process.returncode}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError("jiayi serve did not answer /health")
        time.sleep(0.1)


# --- the journey -------------------------------------------------------------------------


@dataclass
class Client:
    http: httpx.Client
    tokens: TokenStore
    #: every bearer token issued (secrets: only their hashes may be stored, nor logged)
    issued: list[str] = field(default_factory=list)

    def token(self, role: Role, org: UUID | None = None, district: str | None = None) -> str:
        token, _ = self.tokens.issue(f"{role}-scan", role, org, district)
        self.issued.append(token)
        return token

    def post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """A write with an ``Idempotency-Key`` (as a careful client sends on every POST)."""
        headers = bearer(token, **{"Idempotency-Key": uuid4().hex})
        r = self.http.post(path, json=body, headers=headers)
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        found: dict[str, Any] = r.json()
        return found

    def get(self, path: str, token: str, **params: Any) -> dict[str, Any]:
        r = self.http.get(path, params=params, headers=bearer(token))
        assert r.status_code == 200, (path, r.status_code, r.text)
        found: dict[str, Any] = r.json()
        return found


def journey(client: Client, today: date) -> UUID:
    """Organisations, then one patient's whole way: registered, signed, referred up with a
    diagnosis, accepted, arrived, admitted, returned with a plan, acknowledged, followed up;
    searched for by name and national id, the timeline read; an auditor's reads as of a
    moment (which build an as-of replay)."""
    admin = client.token(Role.ADMINISTRATOR)

    def org(kind: str, name: str, level: int | None = None) -> tuple[UUID, str]:
        body: dict[str, Any] = {"kind": kind, "name": name, "district": "鼓楼区"}
        if level:
            body["level"] = level
        oid = UUID(client.post("/organisations", admin, body)["id"])
        role = Role.HOSPITAL_STAFF if kind == "hospital" else Role.CENTER_STAFF
        return oid, client.token(role, oid)

    _, c = org("community_center", "扫描社区卫生服务中心")
    hospital, h = org("hospital", "扫描人民医院", 3)
    client.post(f"/organisations/{hospital}/departments", h, {"code": "cardiology", "name": "心内科"})  # fmt: skip
    team = client.post("/teams", c, {"name": "扫描团队"})["id"]
    member = {"staff_id": "gp-scan", "name": "赵医生", "role": "general_practitioner"}
    client.post(f"/teams/{team}/members", c, member)

    patient = {
        "name": JOURNEY_NAME,
        "sex": "F",
        "birth_date": JOURNEY_BIRTH.isoformat(),
        "national_id": JOURNEY_NATIONAL_ID,
        "phone": JOURNEY_PHONE,
        "tags": ["hypertension"],
    }
    pid = client.post("/patients", c, patient)["id"]
    contract = {"patient_id": pid, "team_id": team, "package": "basic", "start": today.isoformat()}
    client.post("/contracts", c, contract)
    referral = {
        "patient_id": pid,
        "hospital_id": str(hospital),
        "department": "cardiology",
        "reason": JOURNEY_TEXT["reason"],
        "diagnosis": JOURNEY_TEXT["diagnosis"],
        "urgency": "urgent",
    }
    rid = client.post("/referrals", c, referral)["id"]
    client.post(f"/referrals/{rid}/accept", h, {"note": JOURNEY_TEXT["accept note"]})
    client.post(f"/referrals/{rid}/arrival", h, {})
    client.post(f"/referrals/{rid}/admission", h, {"ward": "心内科一病区"})
    plan = {
        "summary": JOURNEY_TEXT["summary"],
        "prescriptions": [{"drug": JOURNEY_TEXT["drug"], "dose": "90mg", "frequency": "bid"}],
        "rehabilitation": JOURNEY_TEXT["rehabilitation"],
        "follow_up_due": (today + timedelta(days=7)).isoformat(),
    }
    client.post(f"/referrals/{rid}/return", h, plan)
    client.post(f"/referrals/{rid}/acknowledge", c, {})
    visit = {
        "on": today.isoformat(),
        "kind": "face_to_face",
        "measurements": {"systolic_bp": 128, "diastolic_bp": 80},
        "note": JOURNEY_TEXT["visit note"],
    }
    last = client.post(f"/patients/{pid}/follow-ups", c, visit)["position"]

    # reads: the timeline (once the views caught up), searches by name and national id (POSTs
    # too: sent with an Idempotency-Key, as a client that sends one on every POST does)
    timeline = client.get(f"/patients/{pid}/timeline", c, wait_for_position=last)["items"]
    assert any(e["kind"] == "follow_up.visit" for e in timeline)
    assert any(JOURNEY_TEXT["reason"] in json.dumps(e, ensure_ascii=False) for e in timeline)
    for term in (JOURNEY_NAME, JOURNEY_NATIONAL_ID):
        found = client.post("/patients/search", c, {"q": term})["items"]
        assert [(p["id"], p["name"]) for p in found] == [(pid, JOURNEY_NAME)]
    assert client.get(f"/referrals/{rid}", h)["id"] == rid

    # an auditor reads as of a moment just past: the views are replayed into a store of
    # their own (a schema, or a file under <data dir>/asof)
    auditor = client.token(Role.AUDITOR)
    moment = (datetime.now(UTC) - timedelta(milliseconds=1)).isoformat()
    items = client.get(f"/patients/{pid}/timeline", auditor, as_of=moment)["items"]
    assert any(e["kind"] == "follow_up.visit" for e in items)
    assert client.get(f"/patients/{pid}", auditor, as_of=moment)["name"] == JOURNEY_NAME
    client.get(f"/teams/{team}/workload", auditor, as_of=moment)
    client.get("/audit/access", auditor, patient=pid)
    return UUID(pid)


# --- the needles -------------------------------------------------------------------------


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _texts(v)


def needles_from_store(settings: Settings) -> tuple[Needles, set[str]]:
    """Every patient's name, national id and phone, and every text in a personal field of any
    event, opened by the application; and the organisations' names (not personal: the
    control that the scan sees the stored text)."""
    needles = Needles()
    organisations: set[str] = set()
    app = build_application(settings)
    try:
        start = 1
        while page := app.recorder.select_notifications(start=start, limit=5000):
            for notification in page:
                event = app.mapper.to_domain_event(notification)
                name = type(event).__qualname__
                if name == "Patient.Registered":
                    needles.add("name", event.name)  # type: ignore[attr-defined]
                    needles.add("national id", event.national_id)  # type: ignore[attr-defined]
                    needles.add("phone", event.phone)  # type: ignore[attr-defined]
                elif name == "Organisation.Registered":
                    organisations.add(event.name)  # type: ignore[attr-defined]
                for attr in PERSONAL_FIELDS.get(type(event), ()):
                    for text in _texts(getattr(event, attr, None)):
                        if len(text) >= 4:
                            needles.add(f"free text ({name}.{attr})", text)
            start = page[-1].id + 1
    finally:
        app.close()
    return needles, organisations


# --- the test ----------------------------------------------------------------------------


def test_the_scan_finds_each_kind_of_needle_in_plain_bytes() -> None:
    """The scanner is not blind: needles written plainly, or as JSON escapes (also as
    PostgreSQL's COPY doubles their backslash), inside longer text, are each found."""
    needles = Needles()
    needles.add("name", JOURNEY_NAME)
    needles.add("national id", JOURNEY_NATIONAL_ID)
    needles.add("phone", JOURNEY_PHONE)
    needles.add("free text", "氨氯地平片 5mg")
    scanner = Scanner(needles)
    cases = {
        "name": [JOURNEY_NAME, json.dumps({"n": "王" + JOURNEY_NAME + "氏"})],
        "national id": [f"x{JOURNEY_NATIONAL_ID}9", json.dumps(JOURNEY_NATIONAL_ID)],
        "phone": [f'"phone": "{JOURNEY_PHONE}"', f"0{JOURNEY_PHONE}00"],
        "free text": [
            json.dumps(["氨氯地平片 5mg"]),
            json.dumps("氨氯地平片 5mg", ensure_ascii=False),
        ],
    }
    for kind, texts in cases.items():
        for text in texts:
            data = b"\x00\xff" + text.encode() + b"\x1e"
            assert scanner.scan(data) == {kind}, (kind, text)
            doubled = text.replace("\\", "\\\\").encode()
            assert scanner.scan(doubled) == {kind}, (kind, "COPY text")
    assert scanner.scan(json.dumps({"n": "欧阳慕"}).encode()) == set()


def test_no_personal_data_in_plain_text_anywhere_after_a_demo_and_a_journey(
    settings: Settings, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # the demo city, built by the command line
    with (logs / "demo.stdout").open("wb") as out, (logs / "demo.stderr").open("wb") as err:
        subprocess.run(
            jiayi("demo", "--patients", str(DEMO_PATIENTS), "--seed", "14"),
            env=child_env(settings, free_port()),
            cwd=ROOT,
            stdout=out,
            stderr=err,
            check=True,
            timeout=300,
        )

    # the journey, over HTTP against `jiayi serve`
    server = start_server(settings, logs)
    try:
        side = SideStore(settings)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            client = Client(http, TokenStore(side))
            pid = journey(client, settings.today())
    finally:
        server.stop()
    # the writes' answers were kept for replay (and are scanned below); the searches' not
    with side.cursor() as cur:
        cur.execute("SELECT path, status FROM api_idempotency")
        kept = cur.fetchall()
    side.close()
    assert len(kept) == 14 and all(status is not None for _, status in kept), kept
    assert not [path for path, _ in kept if path == "/patients/search"]
    # uvicorn re-raises the signal it stopped on, once it stopped cleanly
    stderr = (logs / "serve.stderr").read_text()
    assert server.process.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr, stderr

    needles, organisations = needles_from_store(settings)
    # the store holds what it should: the demo, the journey, every kind of personal field
    kinds = set(needles.kinds.values())
    assert {"name", "national id", "phone"} <= kinds
    assert len([k for k in needles.kinds.values() if k == "name"]) > DEMO_PATIENTS * 0.8
    assert needles.kinds[JOURNEY_NAME] == "name" and needles.kinds[JOURNEY_PHONE] == "phone"
    for what, text in JOURNEY_TEXT.items():
        assert needles.kinds[text].startswith("free text"), what
    assert pid
    for token in client.issued:
        needles.add("bearer token", token)
    scanner = Scanner(needles)
    findings = Findings(scanner)

    # the control: organisation names are stored in plain text, and the scan sees them
    control = Needles()
    for name in organisations:
        control.add("organisation", name)
    seen = Findings(Scanner(control))

    files = scan_data_dir(findings, settings.data_dir)
    scan_data_dir(seen, settings.data_dir)
    if settings.uses_postgres:
        assert settings.postgres_schema
        tables = scan_postgres(findings, settings.postgres_dsn(), settings.postgres_schema)
        scan_postgres(seen, settings.postgres_dsn(), settings.postgres_schema)
        replays = [ns for ns in tables if ns != settings.postgres_schema]
        assert replays, "the auditor's as-of reads built a replay schema"
        main = tables[settings.postgres_schema]
        for table in ("api_idempotency", "access_log", "v_patients"):
            assert table in main, table
        assert any("event" in t for t in main), main
        assert any(
            f"postgres schema {settings.postgres_schema}." in place and "organisation" in kinds
            for place, kinds in seen.leaks.items()
        ), "organisation names are found in the PostgreSQL tables"
        assert any(place.startswith("postgres asof") for place in seen.leaks), (
            "organisation names are found in the as-of replay"
        )
    else:
        names = {p.name for p in files}
        assert "jiayi.sqlite3" in names
        assert any(p.parent.name == "asof" for p in files), "the as-of replay file"
        assert "file jiayi.sqlite3" in seen.leaks, "organisation names are found in the file"
        assert any(p.startswith("file asof/") for p in seen.leaks), "and in the replay's"
    for path in sorted(logs.iterdir()):
        findings.scan(f"log {path.name}", path.read_bytes())
    access = (logs / "serve.stderr").read_text()
    assert "/patients/search" in access, "the access log (api.requestid, stderr) was captured"

    leaks = {where: sorted(kinds) for where, kinds in findings.leaks.items()}
    assert not leaks, f"personal data in plain text (where: kinds of value): {leaks}"

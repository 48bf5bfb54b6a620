"""``JIAYI_LOG_FORMAT=json`` (issue 17): a real ``jiayi serve`` writes one JSON object per line,
each request's line carries its request id, and no line holds the personal data the requests
carried (a patient registered, searched by name and read back)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from api.database import SideStore
from api.tokens import Role, TokenStore
from jiayi.settings import Settings
from tests.e2e.server import bearer, free_port
from tests.world import national_id

ROOT = Path(__file__).resolve().parents[2]
NAME = "欧阳望舒"
BIRTH = date(1977, 7, 9)
NATIONAL_ID = national_id(BIRTH, 913)
PHONE = "13712345678"


def lines_of(*paths: Path) -> list[str]:
    return [line for p in paths for line in p.read_text().splitlines() if line.strip()]


def test_serve_logs_one_json_object_per_line_with_request_ids_and_no_personal_data(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAYI_")}
    env.update(
        JIAYI_DATA_DIR=str(data),
        JIAYI_MASTER_KEY_FILE=os.environ["JIAYI_MASTER_KEY_FILE"],
        JIAYI_HTTP_PORT=str(port),
        JIAYI_LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    out, err = tmp_path / "serve.stdout", tmp_path / "serve.stderr"
    with out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen(
            [sys.executable, "-m", "jiayi.cli", "serve", "--demo-patients", "0"],
            env=env,
            cwd=ROOT,
            stdout=o,
            stderr=e,
        )
    url = f"http://127.0.0.1:{port}"
    sent: dict[str, tuple[str, str, int]] = {}  # request id -> method, route, status
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, lines_of(out, err)
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "jiayi serve did not answer /health"
            time.sleep(0.1)
        tokens = TokenStore(SideStore(Settings(data_dir=data, postgres_url=None)))
        admin, _ = tokens.issue("root", Role.ADMINISTRATOR, None, None)
        with httpx.Client(base_url=url, timeout=30) as http:

            def call(rid: str, method: str, route: str, path: str, token: str, **kw: Any) -> Any:
                r = http.request(method, path, headers=bearer(token, **{"X-Request-ID": rid}), **kw)
                assert r.headers["X-Request-ID"] == rid
                sent[rid] = (method, route, r.status_code)
                return r

            body = {"kind": "community_center", "name": "鼓楼社区", "district": "鼓楼区"}
            r = call(
                "00000000-0000-4000-8000-000000000001",
                "POST",
                "/organisations",
                "/organisations",
                admin,
                json=body,
            )
            center, _ = tokens.issue("gp-1", Role.CENTER_STAFF, UUID(r.json()["id"]), "鼓楼区")
            patient = {
                "name": NAME,
                "sex": "F",
                "birth_date": BIRTH.isoformat(),
                "national_id": NATIONAL_ID,
                "phone": PHONE,
                "tags": ["hypertension"],
            }
            r = call(
                "00000000-0000-4000-8000-000000000002",
                "POST",
                "/patients",
                "/patients",
                center,
                json=patient,
            )
            assert r.status_code == 201, r.text
            pid, written = r.json()["id"], {"wait_for_position": r.json()["position"]}
            r = call(
                "00000000-0000-4000-8000-000000000003",
                "POST",
                "/patients/search",
                "/patients/search",
                center,
                json={"q": NAME},
                params=written,
            )
            assert r.status_code == 200 and pid in r.text
            by_number = {"q": NATIONAL_ID}
            call(
                "00000000-0000-4000-8000-000000000004",
                "POST",
                "/patients/search",
                "/patients/search",
                center,
                json=by_number,
            )
            route = "/patients/{patient_id}"
            r = call(
                "00000000-0000-4000-8000-000000000007",
                "GET",
                route,
                f"/patients/{pid}",
                center,
                params={"q": NAME, **written},
            )
            assert r.status_code == 200 and NAME in r.text
            # refused: a body naming the person, invalid
            bad = {**patient, "national_id": NATIONAL_ID + "0"}
            r = call(
                "00000000-0000-4000-8000-000000000005",
                "POST",
                "/patients",
                "/patients",
                center,
                json=bad,
            )
            assert r.status_code == 422
            call("00000000-0000-4000-8000-000000000006", "GET", "-", f"/nothing/{NAME}", center)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)

    lines = lines_of(out, err)
    records = []
    for line in lines:
        record = json.loads(line)  # every line, stdout and stderr alike, is one JSON object
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("Z")
        records.append(record)
    assert any(r["logger"].startswith("uvicorn") for r in records), "uvicorn's lines too"
    assert any(r["logger"] == "runtime.leadership" for r in records), "the runner's duty"
    access = {r["request_id"]: r for r in records if r["logger"] == "jiayi.access"}
    for rid, (method, route, status) in sent.items():
        line = access[rid]
        assert (line["method"], line["route"], line["status"]) == (method, route, status)
        assert isinstance(line["duration_ms"], float)
    text = "\n".join(lines)
    for value in (NAME, NATIONAL_ID, PHONE, json.dumps(NAME)[1:-1]):  # also as \\u escapes
        assert value not in text, value

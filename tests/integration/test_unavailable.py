"""503 with Retry-After while PostgreSQL cannot be reached, and recovery once it is back.

The restart test runs a private throwaway cluster (never the shared test server).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from api.tokens import Role
from jiayi.settings import Settings
from tests.e2e.server import Served, bearer, free_port


def _pg_bin() -> Path:
    """PostgreSQL server binaries: JIAYI_PG_BIN, else Debian's newest (as infra/postgres does)."""
    if os.environ.get("JIAYI_PG_BIN"):
        return Path(os.environ["JIAYI_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return found[-1] if found else Path("initdb-not-found")


PG_BIN = _pg_bin()


def test_an_unreachable_database_answers_503_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, postgres_url=f"postgresql://jiayi@127.0.0.1:{free_port()}/jiayi"
    )
    served = Served(create_app(settings)).start()
    try:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            assert http.get("/health").status_code == 200
            r = http.get("/ready")
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
            assert r.json()["code"] == "service-unavailable"
            r = http.post("/teams", json={"name": "x"}, headers=bearer("jy_any_token"))
            assert r.status_code == 503 and "retry-after" in r.headers
    finally:
        served.stop()


def _as_postgres(*args: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def private_cluster() -> Iterator[tuple[str, Path, int]]:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs PostgreSQL server binaries and root (to run a private cluster)")
    # Outside pytest's tmp tree, which the postgres user cannot enter.
    data = Path(tempfile.mkdtemp(prefix="jiayi-pg-"))
    shutil.chown(data, "postgres")
    port = free_port()
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "jiayi", "--auth=trust")
    opts = f"-p {port} -k /tmp -c listen_addresses=127.0.0.1"
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(data / "log")]
    _as_postgres(*ctl, "start")
    try:
        yield f"postgresql://jiayi@127.0.0.1:{port}/postgres", data, port
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "immediate",
                "stop",
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.postgres
def test_503_while_postgres_is_stopped_and_recovery_after_restart(
    private_cluster: tuple[str, Path, int], tmp_path: Path
) -> None:
    url, data, port = private_cluster
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w"]
    served = Served(create_app(Settings(data_dir=tmp_path / "d", postgres_url=url))).start()
    token = served.token(Role.ADMINISTRATOR, staff="root")
    body = {"kind": "community_center", "name": "中心", "district": "鼓楼区"}
    try:
        with httpx.Client(base_url=served.url, timeout=60) as http:
            assert http.post("/organisations", json=body, headers=bearer(token)).status_code == 201
            _as_postgres(*ctl, "-m", "fast", "stop")
            time.sleep(6)  # past the token cache: the request must reach the database
            r = http.post("/organisations", json=body, headers=bearer(token))
            assert r.status_code == 503 and "retry-after" in r.headers, r.text
            assert http.get("/ready").status_code == 503
            opts = f"-p {port} -k /tmp -c listen_addresses=127.0.0.1"
            _as_postgres(*ctl, "-o", opts, "-l", str(data / "log"), "start")
            deadline = time.monotonic() + 60
            status = 0
            while time.monotonic() < deadline:
                status = http.post("/organisations", json=body, headers=bearer(token)).status_code
                if status == 201:
                    break
                time.sleep(1)
            assert status == 201
            assert http.get("/ready").status_code == 200
    finally:
        served.stop()

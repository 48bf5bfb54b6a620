"""Processes started together on an empty PostgreSQL schema all come up (each creates the
tables it needs; they take turns under the schema-change lock)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]

#: What a starting process of each kind does to the database before it serves: the API (its
#: tables, the application, the views), the consumer and the relay (the exchange's recorder).
START = """
import sys
from api.database import SideStore
from jiayi.bootstrap import build_application, build_application, build_projections
from jiayi.settings import Settings

settings = Settings()
kind = sys.argv[1]
if kind == "api":
    app = build_application(settings)
    build_projections(settings, app, run=False).close()
    with SideStore(settings).cursor() as cur:
        cur.execute("SELECT 1")
else:
    app = build_application(settings)
app.close()
"""


@pytest.mark.postgres
@pytest.mark.parametrize("round", range(5))
def test_four_mixed_processes_started_together_on_an_empty_schema_all_come_up(
    postgres_url: str, round: int, tmp_path: Path
) -> None:
    schema = f"t_start_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "JIAYI_POSTGRES_URL": postgres_url,
        "JIAYI_POSTGRES_SCHEMA": schema,
        "JIAYI_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    try:
        started = [
            subprocess.Popen(
                [sys.executable, "-c", START, kind],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for kind in ("api", "api", "consumer", "relay")
        ]
        for process in started:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-2000:]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

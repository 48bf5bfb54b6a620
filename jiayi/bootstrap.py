"""Builds the application (and later the views, API and consumers) from :class:`Settings`.

Nothing is created at import time: callers build what they need from the settings they have.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.application import CareCoordination
from jiayi.settings import Settings


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
    if settings.cipher_key is not None:
        env.update(
            CIPHER_TOPIC="eventsourcing.cipher:AESCipher",
            CIPHER_KEY=settings.cipher_key.get_secret_value(),
        )
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
    import psycopg
    from psycopg import sql

    params = settings.postgres_params()
    with psycopg.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"] or None,
        dbname=params["dbname"],
        autocommit=True,
        connect_timeout=5,
    ) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(settings.postgres_schema)
            )
        )


def build_application(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> CareCoordination:
    ensure_schema(settings)
    return CareCoordination(env=event_store_env(settings), clock=clock)

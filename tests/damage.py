"""Damaging a stored event from outside the application (plain SQL), and repairing it, on
either store: what ``eventstore`` must meet as a ``DamagedEvent`` wherever the row is read."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from uuid import UUID

import psycopg
from psycopg import sql

from eventstore.chain import event_digest
from jiayi.settings import Settings


@dataclass(frozen=True)
class Damage:
    """One stored row changed: where it is and what it held."""

    position: int
    aggregate: UUID
    version: int
    topic: str
    original: bytes = field(repr=False)


def _pg_table(settings: Settings, name: str = "events") -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(settings.postgres_schema or "public"),
        sql.Identifier(f"carecoordination_{name}"),
    )


def damage(settings: Settings, aggregate: UUID, version: int, forge_digest: bool = False) -> Damage:
    """Flip one bit of the stored state of ``aggregate``'s event ``version`` (the last byte,
    whatever the encoding: JSON, compressed or encrypted). ``forge_digest``: also write the
    changed row's digest into the chain, as someone covering their tracks would (the row then
    passes the digest check, and only the cipher, when encrypted, finds it out)."""
    if settings.uses_postgres:
        with psycopg.connect(settings.postgres_dsn(), autocommit=True) as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT notification_id, topic, state FROM {} "
                    "WHERE originator_id = %s AND originator_version = %s"
                ).format(_pg_table(settings)),
                (aggregate, version),
            ).fetchone()
            assert row is not None, (aggregate, version)
            position, topic, state = int(row[0]), str(row[1]), bytes(row[2])
            changed = state[:-1] + bytes([state[-1] ^ 1])
            conn.execute(
                sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(
                    _pg_table(settings)
                ),
                (changed, position),
            )
            if forge_digest:
                conn.execute(
                    sql.SQL("UPDATE {} SET digest = %s WHERE notification_id = %s").format(
                        _pg_table(settings)
                    ),
                    (event_digest(aggregate, version, topic, changed), position),
                )
    else:
        with sqlite3.connect(settings.sqlite_path) as conn:
            found = conn.execute(
                "SELECT rowid, topic, state FROM stored_events "
                "WHERE originator_id = ? AND originator_version = ?",
                (aggregate.hex, version),
            ).fetchone()
            assert found is not None, (aggregate, version)
            position, topic, state = int(found[0]), str(found[1]), bytes(found[2])
            changed = state[:-1] + bytes([state[-1] ^ 1])
            conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (changed, position))
            if forge_digest:
                conn.execute(
                    "UPDATE stored_events SET digest = ? WHERE rowid = ?",
                    (event_digest(aggregate, version, topic, changed), position),
                )
        conn.close()
    return Damage(position, aggregate, version, topic, state)


def repair(settings: Settings, done: Damage) -> None:
    """Put back what the row held (as an operator restoring it from a backup would)."""
    if settings.uses_postgres:
        with psycopg.connect(settings.postgres_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(
                    _pg_table(settings)
                ),
                (done.original, done.position),
            )
    else:
        with sqlite3.connect(settings.sqlite_path) as conn:
            conn.execute(
                "UPDATE stored_events SET state = ? WHERE rowid = ?", (done.original, done.position)
            )
        conn.close()

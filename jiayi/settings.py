"""Settings, read from the environment (prefix ``JIAYI_``) or given explicitly by tests."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the processes need to know about where things are."""

    model_config = SettingsConfigDict(env_prefix="JIAYI_", extra="ignore")

    #: Where the embedded default keeps its SQLite files.
    data_dir: Path = Path("var/data")
    #: ``postgresql://user:password@host:port/dbname``; when unset, the embedded SQLite default.
    postgres_url: str | None = None
    #: PostgreSQL schema for all of jiayi's tables (created if missing).
    postgres_schema: str | None = None
    postgres_pool_size: int = 5
    postgres_max_overflow: int = 10
    #: The time zone whose calendar days the rules count (due dates, session days, "today").
    timezone: str = "Asia/Shanghai"
    #: AES key (base64, 16/24/32 bytes) to encrypt stored events; personal data at rest.
    cipher_key: SecretStr | None = None
    #: Where ``jiayi serve`` listens.
    #: Run the projection runner inside the serving process (the embedded default). With
    #: several API processes on PostgreSQL, turn it off and run ``jiayi projections run``.
    projections_in_process: bool = True
    http_host: str = "127.0.0.1"
    #: Language of the web pages (``zh`` or ``en``) when neither ``?lang=``, the cookie nor the
    #: browser's Accept-Language chooses one.
    ui_language: str = "zh"
    http_port: int = 8000
    #: Worker threads of a server process for the (synchronous) routes: requests beyond this
    #: many wait in line instead of competing for the same cores and aggregates.
    http_threads: int = 16

    # --- the Kafka exchange (off when kafka_bootstrap is unset) -------------------------------
    #: ``host:port[,host:port]`` of the Kafka brokers.
    kafka_bootstrap: str | None = None
    #: What partner systems publish (CloudEvents); consumed by ``jiayi consume``.
    partner_topic: str = "jiayi.partner-events"
    #: Every domain event as an integration event, keyed by patient; ``jiayi publish``.
    domain_topic: str = "jiayi.domain-events"
    #: Partner messages that could not be applied, with the reason in headers.
    dead_letter_topic: str = "jiayi.dead-letters"
    #: Consumer group of ``jiayi consume`` (positions live in the event store, not the group).
    consumer_group: str = "jiayi-inbound"
    #: Partitions of the topics ``jiayi consume`` / ``jiayi publish`` create when missing.
    kafka_partitions: int = 6
    #: Most records one poll (and so one event-store transaction per partition) handles.
    kafka_batch: int = 2000
    #: Whether the consumer re-checks record CRCs (cheap: kafka-python uses the ``crc32c``
    #: package, a dependency; its pure-Python fallback took a quarter of the consumer's time).
    kafka_check_crcs: bool = True

    def zone(self) -> ZoneInfo:
        """The deployment's time zone (:attr:`timezone`)."""
        return ZoneInfo(self.timezone)

    def today(self) -> date:
        """Today's calendar day in the deployment's time zone."""
        return datetime.now(self.zone()).date()

    @property
    def uses_postgres(self) -> bool:
        return bool(self.postgres_url)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "jiayi.sqlite3"

    def postgres_params(self) -> dict[str, str]:
        """Host, port, user, password and dbname from :attr:`postgres_url`."""
        if not self.postgres_url:
            raise ValueError("no PostgreSQL configured")
        parts = urlsplit(self.postgres_url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("postgres_url must start with postgresql://")
        return {
            "host": parts.hostname or "127.0.0.1",
            "port": str(parts.port or 5432),
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password or ""),
            "dbname": parts.path.lstrip("/") or "postgres",
        }

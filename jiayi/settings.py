"""Settings, read from the environment (prefix ``JIAYI_``) or given explicitly by tests."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

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
    #: AES key (base64, 16/24/32 bytes) to encrypt stored events; personal data at rest.
    cipher_key: SecretStr | None = None
    #: Where ``jiayi serve`` listens.
    #: Run the projection runner inside the serving process (the embedded default). With
    #: several API processes on PostgreSQL, turn it off and run ``jiayi projections run``.
    projections_in_process: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: Worker threads of a server process for the (synchronous) routes: requests beyond this
    #: many wait in line instead of competing for the same cores and aggregates.
    http_threads: int = 16

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

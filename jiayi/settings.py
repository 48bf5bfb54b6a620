"""Settings, read from the environment (prefix ``JIAYI_``) or given explicitly by tests.

Every value is checked when :class:`Settings` is built, so a process with a bad setting stops
at start (:class:`InvalidSettings`, one line per variable) instead of on first use. Secrets (the
PostgreSQL URL, which holds the password, and the cipher key) are ``SecretStr``: they never
show in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.topics import DEFAULT_PREFIX

ENV_PREFIX = "JIAYI_"

#: What :attr:`Settings.postgres_url` looks like (said in messages instead of the value).
POSTGRES_URL_FORM = "postgresql://user:password@host[:port][/dbname]"
#: Schema names the event store and ``search_path`` use unquoted: lower case, at most 63 bytes.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: AES key sizes (bytes) of ``eventsourcing.cipher.AESCipher``.
AES_KEY_SIZES = (16, 24, 32)


class InvalidSettings(ValueError):
    """Settings that cannot be used; one line per variable, naming it, never its value."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def variable(field: str) -> str:
    """The environment variable of a setting (``postgres_url`` -> ``JIAYI_POSTGRES_URL``)."""
    return f"{ENV_PREFIX}{field.upper()}"


def _problems(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        # A check across variables (no location) names them in its message.
        lines.append(f"{variable(field)}: {message}" if error["loc"] else message)
    return lines


def _blank_is_unset(value: Any) -> Any:
    """An empty variable (``JIAYI_POSTGRES_URL=``) means unset, as it always has."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


def postgres_url_params(url: str) -> dict[str, str]:
    """Host, port, user, password and dbname of a PostgreSQL URL; ``ValueError`` (never
    quoting the URL, which holds the password) when it is not one this deployment can use."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"not a PostgreSQL URL with a valid port ({POSTGRES_URL_FORM})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"must start with postgresql:// or postgres:// ({POSTGRES_URL_FORM})")
    host = parts.hostname
    if not host or "," in parts.netloc.rpartition("@")[2]:
        raise ValueError(f"must name one host ({POSTGRES_URL_FORM})")
    dbname = unquote(parts.path.removeprefix("/"))
    if "/" in dbname:
        raise ValueError(f"the database name has a slash ({POSTGRES_URL_FORM})")
    if parts.query or parts.fragment:
        raise ValueError(f"query parameters are not supported ({POSTGRES_URL_FORM})")
    return {
        "host": host,
        "port": str(port or 5432),
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "dbname": dbname or "postgres",
    }


def _check_postgres_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        postgres_url_params(value.get_secret_value())
    return value


def _check_cipher_key(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    try:
        key = base64.b64decode(value.get_secret_value().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (an AES key of 16, 24 or 32 bytes)") from None
    if len(key) not in AES_KEY_SIZES:
        raise ValueError(f"must be an AES key of 16, 24 or 32 bytes, not {len(key)}")
    return value


def _check_schema(value: str | None) -> str | None:
    if value is not None and not SCHEMA_NAME.fullmatch(value):
        raise ValueError(
            "must be a lower-case PostgreSQL name: letters a-z, digits and _, not starting "
            "with a digit, at most 63 characters"
        )
    if value is not None and value.startswith("pg_"):
        raise ValueError("names starting with pg_ are reserved by PostgreSQL")
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)"
        ) from None
    return value


PostgresUrl = Annotated[
    SecretStr | None, BeforeValidator(_blank_is_unset), AfterValidator(_check_postgres_url)
]
CipherKey = Annotated[
    SecretStr | None, BeforeValidator(_blank_is_unset), AfterValidator(_check_cipher_key)
]
SchemaName = Annotated[str | None, BeforeValidator(_blank_is_unset), AfterValidator(_check_schema)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


def _check_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError("must name a readable file (a PEM bundle of CA certificates)")
    return value


Secret = Annotated[SecretStr | None, BeforeValidator(_blank_is_unset)]
OptionalName = Annotated[str | None, BeforeValidator(_blank_is_unset)]
CaFile = Annotated[Path | None, BeforeValidator(_blank_is_unset), AfterValidator(_check_file)]
Port = Annotated[int, Field(ge=1, le=65535)]
Positive = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """Everything the processes need to know about where things are."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True
    )

    #: Where the embedded default keeps its SQLite files.
    data_dir: Path = Path("var/data")
    #: ``postgresql://user:password@host:port/dbname`` (a secret: it holds the password);
    #: when unset, the embedded SQLite default.
    postgres_url: PostgresUrl = None
    #: PostgreSQL schema for all of jiayi's tables (created if missing).
    postgres_schema: SchemaName = None
    postgres_pool_size: Positive = 5
    postgres_max_overflow: Annotated[int, Field(ge=0)] = 10
    #: The time zone whose calendar days the rules count (due dates, session days, "today").
    timezone: TimeZoneName = "Asia/Shanghai"
    #: AES key (base64, 16/24/32 bytes) to encrypt whole stored events as well (optional: each
    #: patient's personal data is encrypted with their own key in any case).
    cipher_key: CipherKey = None
    #: The master key (32 bytes, base64 on one line) that wraps every patient's data key,
    #: kept outside the database (a secret file). The embedded default creates
    #: ``<data_dir>/keys/master.key`` when the store has no keys yet; PostgreSQL needs it set.
    master_key_file: Annotated[Path | None, BeforeValidator(_blank_is_unset)] = None
    #: Run the projection runner inside the serving process (the embedded default). With
    #: several API processes on PostgreSQL, turn it off and run ``jiayi projections run``.
    projections_in_process: bool = True
    #: Where ``jiayi serve`` listens.
    http_host: str = "127.0.0.1"
    #: Language of the web pages (``zh`` or ``en``) when neither ``?lang=``, the cookie nor the
    #: browser's Accept-Language chooses one.
    ui_language: Literal["zh", "en"] = "zh"
    #: How every process logs (``runtime.logs``): plain text lines, or one JSON object per line
    #: (time in UTC, level, logger, message, request id and other context fields).
    log_format: Literal["text", "json"] = "text"
    http_port: Port = 8000
    #: Worker threads of a server process for the (synchronous) routes: requests beyond this
    #: many wait in line instead of competing for the same cores and aggregates.
    http_threads: Positive = 16
    #: Largest request body (bytes) a server reads: a larger one is answered 413
    #: ``body-too-large`` before it is read and before authentication (1 MiB).
    http_max_body: Positive = 1024 * 1024
    #: The pages' sign-in session: ended after this many seconds without a request, and this
    #: many seconds after signing in whatever happens (server-side; the cookie holds only a
    #: random session id).
    ui_session_idle: Positive = 30 * 60
    ui_session_lifetime: Positive = 12 * 60 * 60
    #: ``/ready`` says ``views-stalled`` when the views have lacked an event recorded this
    #: many seconds ago without moving meanwhile.
    views_max_lag: Positive = 30

    # --- metrics (Prometheus; see jiayi/metrics.py) -----------------------------------------
    #: Port on which every long-running process (``serve``, ``projections run``, ``consume``,
    #: ``publish``) serves its metrics (``/metrics``, text exposition), apart from the API;
    #: unset: none. Operators scrape it on their own network.
    metrics_port: Annotated[Port | None, BeforeValidator(_blank_is_unset)] = None
    #: Address the metrics port listens on (``0.0.0.0`` in a container).
    metrics_host: str = "127.0.0.1"
    #: Also answer ``GET /metrics`` on the API itself (no token: only where the API's port is
    #: not reachable from outside the operators' network).
    metrics_on_api: bool = False

    # --- views as of a moment (see projections/replays.py) ------------------------------------
    #: Replay stores kept, all processes together (the least recently used are deleted).
    asof_max_stores: Positive = 32
    #: Bytes the replay stores may hold together (SQLite files, PostgreSQL tables + indexes).
    asof_max_bytes: Positive = 512 * 1024 * 1024
    #: Replays one process builds at once (each a whole rebuild up to the moment).
    asof_builds: Positive = 1
    #: Requests of one process waiting for a replay beyond those being built; more are
    #: answered 503 ``as-of-busy`` with Retry-After (they would hold the workers live reads
    #: need).
    asof_queue: Annotated[int, Field(ge=0)] = 4

    # --- the Kafka exchange (off when kafka_bootstrap is unset) -------------------------------
    #: ``host:port[,host:port]`` of the Kafka brokers.
    kafka_bootstrap: str | None = None
    #: Start of every partner's topics: ``<prefix><org id>.in`` (what it sends, consumed by
    #: ``jiayi consume``) and ``<prefix><org id>.out`` (what ``jiayi publish`` routes to it);
    #: see :mod:`consumers.topics`.
    partner_topic_prefix: str = DEFAULT_PREFIX
    #: The regional platform's topic: every domain event, unrouted (personal data still left
    #: out). Off (unset) by default.
    platform_topic: str | None = None
    #: Partner messages that could not be applied, with the reason in headers.
    dead_letter_topic: str = "jiayi.dead-letters"
    #: Consumer group of ``jiayi consume`` (positions live in the event store, not the group).
    consumer_group: str = "jiayi-inbound"
    #: Partitions of the topics ``jiayi consume`` / ``jiayi publish`` create when missing.
    kafka_partitions: Positive = 6
    #: Most records one poll (and so one event-store transaction per partition) handles.
    kafka_batch: Positive = 2000
    #: Whether the consumer re-checks record CRCs (cheap: kafka-python uses the ``crc32c``
    #: package, a dependency; its pure-Python fallback took a quarter of the consumer's time).
    kafka_check_crcs: bool = True
    #: The largest partner message ``jiayi consume`` accepts, in bytes (key, value and headers
    #: together), checked before anything of it is parsed: a larger one is dead-lettered
    #: (``message-too-large``) with the first 4 KiB of its value. At most 900 KiB, so that
    #: a dead letter (the message plus its reason headers) fits the brokers' 1 MiB default.
    kafka_max_message_bytes: Annotated[int, Field(ge=1024, le=900 * 1024)] = 256 * 1024
    #: How clients talk to the brokers. SASL_PLAINTEXT by default: every broker jiayi runs (the
    #: test broker of infra/kafka, the compose file's, which is SASL_SSL) authenticates, so an
    #: unauthenticated connection is something to ask for explicitly (PLAINTEXT), never a
    #: silent fallback. With SASL the credentials below must be set (checked at start).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
    #: This process's principal: ``jiayi-consumer`` for ``jiayi consume``, ``jiayi-relay`` for
    #: ``jiayi publish`` (each with least-privilege ACLs, see ``jiayi partners services``).
    kafka_username: OptionalName = None
    kafka_password: Secret = None
    #: The administrator (topics, SCRAM users, ACLs): ``jiayi partners``; falls back to
    #: :attr:`kafka_username` when unset.
    kafka_admin_username: OptionalName = None
    kafka_admin_password: Secret = None
    #: CA certificates (PEM) that signed the brokers' certificates (SASL_SSL); when unset, the
    #: system's.
    kafka_ssl_cafile: CaFile = None

    # --- provable history (see audit/) ---------------------------------------------------------
    #: The Ed25519 key (PEM, PKCS#8) that signs seals of the hash chain, kept outside the
    #: database. The embedded default creates ``<data_dir>/audit/seal-key.pem`` when missing;
    #: elsewhere, unset means no seals are made (``jiayi audit seal`` says so).
    audit_key_file: Annotated[Path | None, BeforeValidator(_blank_is_unset)] = None
    #: A copy of every seal, one JSON object a line, outside the database (default
    #: ``<data_dir>/audit/seals.jsonl``): what ``jiayi audit verify --seals`` checks against.
    audit_seal_log: Annotated[Path | None, BeforeValidator(_blank_is_unset)] = None
    #: Seconds between seals made by the long-running processes (when the log moved).
    audit_seal_interval: Positive = 300
    #: The Kafka topic seals are published to (when Kafka is configured).
    audit_topic: str = "jiayi.audit.seals"

    @model_validator(mode="after")
    def _master_key_with_postgres(self) -> Settings:
        if self.postgres_url is not None and self.master_key_file is None:
            raise ValueError(
                f"{variable('master_key_file')}: needed with {variable('postgres_url')}: the "
                "file holding the master key that wraps each patient's data key, kept outside "
                "the database (make one with: jiayi keys create FILE)"
            )
        return self

    @model_validator(mode="after")
    def _kafka_credentials(self) -> Settings:
        if not self.kafka_bootstrap or self.kafka_security_protocol == "PLAINTEXT":
            return self
        pairs = (
            ("kafka_username", self.kafka_username, self.kafka_password),
            ("kafka_admin_username", self.kafka_admin_username, self.kafka_admin_password),
        )
        for name, user, password in pairs:
            partner = name.replace("username", "password")
            if user is not None and password is None:
                raise ValueError(f"{variable(partner)}: needed with {variable(name)}")
            if user is None and password is not None:
                raise ValueError(f"{variable(name)}: needed with {variable(partner)}")
        if self.kafka_username is None and self.kafka_admin_username is None:
            raise ValueError(
                f"{variable('kafka_username')}: needed (with {variable('kafka_password')}, or "
                f"the admin's) when {variable('kafka_bootstrap')} is set and "
                f"{variable('kafka_security_protocol')} is {self.kafka_security_protocol}"
            )
        return self

    def __init__(self, **values: Any) -> None:
        """Read and check every setting; :class:`InvalidSettings` names each bad one."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidSettings(_problems(exc)) from None

    def zone(self) -> ZoneInfo:
        """The deployment's time zone (:attr:`timezone`)."""
        return ZoneInfo(self.timezone)

    def today(self) -> date:
        """Today's calendar day in the deployment's time zone."""
        return datetime.now(self.zone()).date()

    @property
    def metrics_enabled(self) -> bool:
        """Whether this process keeps metrics someone can read (a port, or ``/metrics``)."""
        return self.metrics_port is not None or self.metrics_on_api

    @property
    def uses_postgres(self) -> bool:
        return self.postgres_url is not None

    def postgres_dsn(self) -> str:
        """:attr:`postgres_url` in clear, for a driver to connect with."""
        if self.postgres_url is None:
            raise ValueError("no PostgreSQL configured")
        return self.postgres_url.get_secret_value()

    @property
    def master_key_path(self) -> Path:
        """The master key's file: :attr:`master_key_file`, else the embedded default's."""
        return self.master_key_file or self.data_dir / "keys" / "master.key"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "jiayi.sqlite3"

    def postgres_params(self) -> dict[str, str]:
        """Host, port, user, password and dbname from :attr:`postgres_url`."""
        return postgres_url_params(self.postgres_dsn())

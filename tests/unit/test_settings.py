"""Every setting is checked when the settings are built: a bad value is named by its variable,
and a secret never shows in a message or a repr."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from jiayi.settings import InvalidSettings, Settings

PASSWORD = "s3cret-pw"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("JIAYI_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"postgres_url": f"not a url {PASSWORD}"}, "JIAYI_POSTGRES_URL"),
        ({"postgres_url": f"mysql://jiayi:{PASSWORD}@db:3306/jiayi"}, "JIAYI_POSTGRES_URL"),
        ({"postgres_url": f"postgresql://jiayi:{PASSWORD}@db:99999/jiayi"}, "JIAYI_POSTGRES_URL"),
        ({"postgres_url": f"postgresql://jiayi:{PASSWORD}@db:port/jiayi"}, "JIAYI_POSTGRES_URL"),
        ({"postgres_url": f"postgresql://jiayi:{PASSWORD}@/jiayi"}, "JIAYI_POSTGRES_URL"),
        ({"postgres_url": f"postgresql://jiayi:{PASSWORD}@a,b/jiayi"}, "JIAYI_POSTGRES_URL"),
        ({"postgres_url": f"postgresql://jiayi:{PASSWORD}@db/jiayi/x"}, "JIAYI_POSTGRES_URL"),
        (
            {"postgres_url": f"postgresql://jiayi:{PASSWORD}@db/jiayi?sslmode=require"},
            "JIAYI_POSTGRES_URL",
        ),
        ({"cipher_key": PASSWORD}, "JIAYI_CIPHER_KEY"),
        ({"cipher_key": base64.b64encode(b"x" * 20).decode()}, "JIAYI_CIPHER_KEY"),
        ({"postgres_schema": "Jiayi"}, "JIAYI_POSTGRES_SCHEMA"),
        ({"postgres_schema": "jiayi; drop"}, "JIAYI_POSTGRES_SCHEMA"),
        ({"postgres_schema": "x" * 64}, "JIAYI_POSTGRES_SCHEMA"),
        ({"postgres_schema": "pg_jiayi"}, "JIAYI_POSTGRES_SCHEMA"),
        ({"timezone": "Asia/Beijing"}, "JIAYI_TIMEZONE"),
        ({"timezone": "../etc/passwd"}, "JIAYI_TIMEZONE"),
        ({"ui_language": "fr"}, "JIAYI_UI_LANGUAGE"),
        ({"http_port": 70000}, "JIAYI_HTTP_PORT"),
        ({"http_threads": 0}, "JIAYI_HTTP_THREADS"),
        ({"kafka_batch": 0}, "JIAYI_KAFKA_BATCH"),
        ({"kafka_security_protocol": "SSL"}, "JIAYI_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "JIAYI_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "JIAYI_KAFKA_SSL_CAFILE"),
        ({"kafka_bootstrap": "k:9092"}, "JIAYI_KAFKA_USERNAME"),
        ({"kafka_bootstrap": "k:9092", "kafka_username": "u"}, "JIAYI_KAFKA_PASSWORD"),
        ({"kafka_bootstrap": "k:9092", "kafka_password": PASSWORD}, "JIAYI_KAFKA_USERNAME"),
        (
            {"kafka_bootstrap": "k:9092", "kafka_admin_password": PASSWORD},
            "JIAYI_KAFKA_ADMIN_USERNAME",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable_and_never_a_secret(
    values: dict[str, Any], variable: str
) -> None:
    with pytest.raises(InvalidSettings) as refused:
        Settings(**values)
    message = str(refused.value)
    assert message.startswith(f"{variable}: "), message
    assert len(refused.value.lines) == 1
    assert PASSWORD not in message
    assert "\n" not in message


def test_the_environment_is_checked_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIAYI_POSTGRES_URL", f"postgresql//jiayi:{PASSWORD}@db/jiayi")
    monkeypatch.setenv("JIAYI_CIPHER_KEY", PASSWORD)
    monkeypatch.setenv("JIAYI_HTTP_PORT", "eighty")
    with pytest.raises(InvalidSettings) as refused:
        Settings()
    assert [line.split(":")[0] for line in refused.value.lines] == [
        "JIAYI_POSTGRES_URL",
        "JIAYI_CIPHER_KEY",
        "JIAYI_HTTP_PORT",
    ]
    assert PASSWORD not in str(refused.value)


def test_postgresql_without_a_master_key_file_is_refused_naming_the_variable() -> None:
    with pytest.raises(InvalidSettings) as refused:
        Settings(postgres_url=f"postgresql://jiayi:{PASSWORD}@db/jiayi")
    (line,) = refused.value.lines
    assert line.startswith("JIAYI_MASTER_KEY_FILE: needed with JIAYI_POSTGRES_URL")
    assert "jiayi keys create" in line and PASSWORD not in line


def test_what_postgresql_accepts_is_accepted_and_secrets_stay_hidden() -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    settings = Settings(
        postgres_url=f"postgres://jiayi:{PASSWORD}@db.internal:6432/care",
        postgres_schema="jiayi_prod",
        cipher_key=key,
        timezone="Asia/Urumqi",
        master_key_file="/run/secrets/jiayi-master-key",
    )
    assert settings.uses_postgres
    assert settings.postgres_params() == {
        "host": "db.internal",
        "port": "6432",
        "user": "jiayi",
        "password": PASSWORD,
        "dbname": "care",
    }
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert key not in repr(settings)
    assert settings.cipher_key is not None and settings.cipher_key.get_secret_value() == key
    defaults = Settings(postgres_url="postgresql://db", master_key_file="k").postgres_params()
    assert (defaults["port"], defaults["user"], defaults["dbname"]) == (
        "5432",
        "postgres",
        "postgres",
    )
    escaped = Settings(
        postgres_url="postgresql://jiayi:p%40ss%2Fw@[::1]/jiayi", master_key_file="k"
    ).postgres_params()
    assert (escaped["host"], escaped["password"]) == ("::1", "p@ss/w")


def test_an_empty_postgres_url_means_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIAYI_POSTGRES_URL", "")
    monkeypatch.setenv("JIAYI_POSTGRES_SCHEMA", "")
    settings = Settings()
    assert not settings.uses_postgres and settings.postgres_schema is None


def test_kafka_credentials_are_secret_and_plaintext_needs_none() -> None:
    settings = Settings(kafka_bootstrap="k:9092", kafka_username="u", kafka_password=PASSWORD)
    assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
    assert PASSWORD not in repr(settings)
    assert Settings(kafka_bootstrap="k:9092", kafka_security_protocol="PLAINTEXT")
    admin_only = Settings(
        kafka_bootstrap="k:9092", kafka_admin_username="a", kafka_admin_password=PASSWORD
    )
    from jiayi.bootstrap import kafka_client_config

    assert kafka_client_config(admin_only, "admin")["sasl_plain_username"] == "a"
    with pytest.raises(ValueError, match="JIAYI_KAFKA_USERNAME"):
        kafka_client_config(admin_only, "consumer")

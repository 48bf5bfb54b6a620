"""SASL_SSL: a broker of the test's own with a TLS listener whose certificate is made here (a
throwaway CA signs it; the broker reads a PEM keystore), and jiayi's clients over it."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaTimeoutError
from pydantic import SecretStr

from jiayi import kafka_access
from jiayi.bootstrap import build_admin, kafka_client_config
from jiayi.settings import Settings
from tests.kafka_helpers import admin_credentials, free_ports

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.kafka


def make_certificates(where: Path) -> tuple[Path, Path]:
    """A CA certificate (PEM) and the broker's keystore (PEM: unencrypted PKCS#8 key, then the
    certificate for 127.0.0.1 / localhost signed by the CA). Made with the openssl command
    (present wherever the broker runs: Java's CA certificates package depends on it)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    key = ("-newkey", "rsa:2048", "-nodes")
    openssl(
        "req",
        "-x509",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=jiayi test CA",
    )
    openssl("req", *key, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    (where / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "broker.pem",
    )
    keystore = where / "broker-keystore.pem"
    keystore.write_text("".join((where / f).read_text() for f in ("broker.key", "broker.pem")))
    keystore.chmod(0o600)
    return where / "ca.pem", keystore


@pytest.fixture
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, int]]:
    """(data dir, CA file, port) of a broker with a SASL_SSL listener on 127.0.0.1:port."""
    where = tmp_path_factory.mktemp("kafka-tls")
    cafile, keystore = make_certificates(where)
    port, controller, broker, ssl = free_ports(4)
    env = dict(
        os.environ,
        JIAYI_KAFKA_PORT=str(port),
        JIAYI_KAFKA_CONTROLLER_PORT=str(controller),
        JIAYI_KAFKA_BROKER_PORT=str(broker),
        JIAYI_KAFKA_SSL_PORT=str(ssl),
        JIAYI_KAFKA_SSL_KEYSTORE=str(keystore),
        JIAYI_KAFKA_DIR=str(where / "kafka"),
        JIAYI_KAFKA_HEAP="512m",
    )
    subprocess.run([ROOT / "infra/kafka/ensure.sh"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        yield where / "kafka", cafile, ssl
    finally:
        subprocess.run([ROOT / "infra/kafka/stop.sh"], env=env, check=False)


def test_jiayi_and_a_partner_work_over_sasl_ssl_and_a_client_without_the_ca_is_refused(
    tls_broker: tuple[Path, Path, int], tmp_path: Path, kafka_bootstrap: str
) -> None:
    data_dir, cafile, ssl_port = tls_broker
    credentials = admin_credentials(data_dir)
    assert credentials is not None
    settings = Settings(
        data_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{ssl_port}",
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=cafile,
        kafka_admin_username=credentials[0],
        kafka_admin_password=credentials[1],
        kafka_partitions=1,
        partner_topic_prefix=f"t.{uuid.uuid4().hex[:8]}.",
    )
    org = uuid.uuid4()
    admin = build_admin(settings)
    try:
        partner = kafka_access.add_partner(admin, settings, org)
        assert admin.describe_cluster()["brokers"]  # the admin's own session is over TLS
    finally:
        admin.close()

    as_partner = settings.model_copy(
        update={"kafka_username": partner.username, "kafka_password": SecretStr(partner.password)}
    )
    config = kafka_client_config(as_partner, "consumer")
    assert config["security_protocol"] == "SASL_SSL" and config["ssl_cafile"] == str(cafile)
    producer = KafkaProducer(**config, max_block_ms=15000)
    producer.send(f"{settings.partner_topic_prefix}{org}.in", value=b"over TLS").get(timeout=15)
    producer.close()

    # Without the CA that signed the broker's certificate, the client does not trust it.
    untrusting = {k: v for k, v in config.items() if k != "ssl_cafile"}
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(**untrusting, bootstrap_timeout_ms=3000).close()

"""The operators' deployment (infra/compose.yaml, Dockerfile) names commands that exist."""

from __future__ import annotations

from pathlib import Path

import yaml

from jiayi.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_of_the_compose_file_runs_a_command_jiayi_accepts() -> None:
    compose = yaml.safe_load((ROOT / "infra/compose.yaml").read_text())
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == "jiayi"
    }
    assert set(commands) == {"api", "consumer", "relay", "projections", "kafka-access"}
    parser = build_parser()
    for command in commands.values():
        assert callable(parser.parse_args(command[1:]).func)
    assert compose["services"]["relay"].get("deploy", {}).get("replicas", 1) == 1


def test_the_image_the_compose_file_builds_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
    assert {"domain", "eventstore", "audit", "jiayi"} <= set(packages)
    assert all(f'"{p}*"' in pyproject for p in packages)
    missing = [p for p in packages if f"COPY {p} ./{p}" not in dockerfile]
    assert not missing, f"the image would lack these packages: {missing}"
    assert "pip install --no-cache-dir ." in dockerfile


def test_the_compose_files_kafka_clients_use_sasl_ssl_with_principals_of_their_own() -> None:
    services = yaml.safe_load((ROOT / "infra/compose.yaml").read_text())["services"]
    for name in ("consumer", "relay", "kafka-access"):
        assert services[name]["environment"]["JIAYI_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for name in ("api", "projections"):  # no Kafka: no credentials to check for at start
        assert "JIAYI_KAFKA_BOOTSTRAP" not in services[name]["environment"]
    assert "JIAYI_KAFKA_ADMIN_PASSWORD" in services["kafka-access"]["environment"]
    assert services["consumer"]["environment"]["JIAYI_KAFKA_USERNAME"] == "jiayi-consumer"
    assert services["relay"]["environment"]["JIAYI_KAFKA_USERNAME"] == "jiayi-relay"


def test_every_jiayi_service_gets_the_master_key_as_a_secret_and_no_variable_is_left_empty() -> (
    None
):
    compose = yaml.safe_load((ROOT / "infra/compose.yaml").read_text())
    assert compose["secrets"]["master_key"]["file"] == "./secrets/master.key"
    for name, service in compose["services"].items():
        if service.get("image") != "jiayi:latest":
            continue
        assert "master_key" in service["secrets"], name
        env = service["environment"]
        assert env["JIAYI_MASTER_KEY_FILE"] == "/run/secrets/master_key", name
        assert not [k for k, v in env.items() if k.startswith("JIAYI_") and ":-}" in str(v)], name


def test_the_views_are_followed_by_one_service_not_by_every_api_replica() -> None:
    services = yaml.safe_load((ROOT / "infra/compose.yaml").read_text())["services"]
    assert services["api"]["environment"]["JIAYI_PROJECTIONS_IN_PROCESS"] == "false"
    assert services["projections"]["command"] == ["jiayi", "projections", "run"]

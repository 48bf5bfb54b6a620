"""Issue 17, the operators' metrics files: the alert rules and the Grafana dashboard name only
metrics jiayi exports (a renamed metric would leave an alert that never fires), the dashboard
shows every one, and Prometheus scrapes every jiayi service of the compose file on the port it
serves its metrics on. Also: a metrics source that fails is counted, never raised into a
scrape, and a leadership reports the duty it holds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from jiayi import metrics
from runtime.leadership import Duty

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

#: PromQL words that are not metrics (functions are recognised by the "(" after them).
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
#: Series Prometheus itself makes for every target.
PROMETHEUS_OWN = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers not followed by ``(`` (a
    function or an aggregation), outside strings, label matchers, ranges and label lists."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", expr):
        if m.group(1).lower() not in KEYWORDS:
            found.add(m.group(1))
    return found


def test_the_extractor_finds_the_metrics_of_an_expression_and_nothing_else() -> None:
    expr = (
        'sum by (le, route) (rate(jiayi_a_bucket{route=~"/x.*", status="5xx"}[5m])) / '
        "on (route) group_left max(jiayi_b) > 0.95 and absent(up{job='x'} == 1) or vector(1e3)"
    )
    assert metric_names(expr) == {"jiayi_a_bucket", "jiayi_b", "up"}


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((INFRA / "prometheus/alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads((INFRA / "grafana/dashboards/jiayi.json").read_text())
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def test_every_metric_the_alert_rules_name_is_exported() -> None:
    exported = metrics.exported_names()
    named: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - exported - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']} names metrics jiayi does not export: {unknown}"
        named |= names
    # the alerts the operators asked for: views behind, consumer lag growing, dead letters
    # above a rate, relay stopped, no leader
    assert {
        "jiayi_view_lag_seconds",
        "jiayi_consumer_lag_messages",
        "jiayi_consumer_dead_letters_total",
        "jiayi_relay_events_published_total",
        "jiayi_relay_lag_events",
        "jiayi_duty_held",
    } <= named
    # one rule per duty, by the names the locks have (jiayi.bootstrap)
    duties = {m for r in alert_rules() for m in re.findall(r'duty=~?"([^"]+)"', r["expr"])}
    assert duties == {"kafka-relay:.*", "projections"}


def test_the_dashboard_names_only_exported_metrics_and_shows_every_one() -> None:
    exported = metrics.exported_names()
    named = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert not named - exported - PROMETHEUS_OWN
    families = {
        name
        for name in exported
        if not name.endswith(("_created", "_sum", "_count", "_bucket"))
        and name + "_total" not in exported  # a counter's family name without _total
    }
    shown = {n.removesuffix("_bucket") for n in named}
    assert families <= shown, f"not on the dashboard: {families - shown}"


def test_histograms_and_counters_are_exported_with_their_suffixes() -> None:
    exported = metrics.exported_names()
    assert {
        "jiayi_http_requests_total",
        "jiayi_http_request_duration_seconds_bucket",
        "jiayi_http_request_duration_seconds_count",
        "jiayi_consumer_batch_messages_sum",
        "jiayi_view_lag_seconds",
        "jiayi_duty_held",
    } <= exported
    assert "jiayi_no_such_metric" not in exported


def test_prometheus_scrapes_every_jiayi_service_on_its_metrics_port() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    scrape = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())
    scraped: dict[str, int] = {}
    for job in scrape["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            for name in sd["names"]:
                scraped[name] = sd["port"]
    workers = {"api", "consumer", "relay", "projections"}
    assert set(scraped) == workers
    for name, port in scraped.items():
        service = services[name]
        env = service["environment"]
        assert int(env["JIAYI_METRICS_PORT"]) == port, name
        assert env["JIAYI_METRICS_HOST"] == "0.0.0.0", name
        assert str(port) in [str(p) for p in service.get("expose", [])], name
        published = [str(p) for p in service.get("ports", [])]
        assert not any(p.split(":")[-1] == str(port) for p in published), (
            f"{name} publishes its metrics port outside the compose network"
        )
    # the rules Prometheus loads are the ones in the repository, mounted where it reads them
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("./"))
    assert mounts["./prometheus/alerts.yml"] in scrape["rule_files"]
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # Grafana reads Prometheus and the dashboard from where compose puts them
    grafana = services["grafana"]
    gmounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    sources = yaml.safe_load(
        (INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    providers = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/jiayi.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == gmounts["./grafana/dashboards"]
    assert gmounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    uid = sources["datasources"][0]["uid"]
    board = json.loads((INFRA / "grafana/dashboards/jiayi.json").read_text())
    assert all(p["datasource"]["uid"] == uid for p in board["panels"])


def test_a_failing_source_is_counted_and_left_out_never_raised() -> None:
    def broken() -> Any:
        yield "jiayi_log_head_position", (), 7.0
        raise RuntimeError("the database does not answer")

    errors = REGISTRY.get_sample_value("jiayi_metrics_errors_total", {"source": "test-broken"})
    metrics.watch("test-broken", broken)
    try:
        text = generate_latest().decode()  # does not raise
    finally:
        metrics.unwatch("test-broken")
    after = REGISTRY.get_sample_value("jiayi_metrics_errors_total", {"source": "test-broken"})
    assert (after or 0) - (errors or 0) == 1
    assert "jiayi_log_head_position 7.0" not in text  # none of a failed source's samples


class Toggle:
    def __init__(self) -> None:
        self.free = True

    def hold(self) -> bool:
        return self.free

    def release(self) -> None:
        pass


@pytest.mark.parametrize("duty", ["projections", "kafka-relay:jiayi.partner."])
def test_a_leadership_reports_whether_it_holds_its_duty(duty: str) -> None:
    inner = Toggle()
    leadership = Duty(duty, inner, lambda held: metrics.duty_held(duty, held))

    def held() -> float | None:
        return REGISTRY.get_sample_value("jiayi_duty_held", {"duty": duty})

    assert leadership.hold()
    assert held() == 1
    inner.free = False
    assert not leadership.hold()
    assert held() == 0
    inner.free = True
    leadership.hold()
    leadership.release()
    assert held() == 0

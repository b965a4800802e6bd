"""The observability layer's files: `make validate` checks them and fails on a broken one; the dashboards'
PromQL is parsed into the metric names they read (checked against a real scrape in tests/e2e)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import run_validate
from tests.deploy.dashboards import dashboard_metric_names, dashboards, expressions, metric_names

TreeCopy = Callable[..., Path]
FILES = ("deploy/observability", "docker-compose.yml", "docker-compose.observability.yml", ".yamllint")


def test_the_observability_files_validate() -> None:
    result = run_validate("observability", "compose", "yamllint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   observability 4 dashboards" in result.stdout
    assert "docker-compose.observability.yml" in result.stdout


def test_a_dashboard_on_an_unknown_datasource_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy(*FILES)
    path = root / "deploy" / "observability" / "grafana" / "dashboards" / "repotalk-search.json"
    path.write_text(path.read_text().replace('"uid": "prometheus"', '"uid": "prom-1"', 1))
    result = run_validate("observability", root=root)
    assert result.returncode == 1 and "unknown datasource 'prom-1'" in result.stdout, result.stdout


def test_a_dashboard_that_is_not_json_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy(*FILES)
    path = root / "deploy" / "observability" / "grafana" / "dashboards" / "repotalk-llm.json"
    path.write_text(path.read_text()[:-10])
    result = run_validate("observability", root=root)
    assert result.returncode == 1 and "repotalk-llm.json: not JSON" in result.stdout, result.stdout


def test_a_scrape_target_that_is_no_compose_service_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy(*FILES)
    path = root / "deploy" / "observability" / "prometheus" / "prometheus.yml"
    path.write_text(path.read_text().replace("worker-processor:8001", "worker-proc:8001"))
    result = run_validate("observability", root=root)
    assert result.returncode == 1 and "worker-proc:8001, not a compose service" in result.stdout, result.stdout


def test_a_collector_pipeline_with_an_undefined_exporter_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy(*FILES)
    path = root / "deploy" / "observability" / "otel-collector" / "config.yaml"
    path.write_text(path.read_text().replace("exporters: [otlp/jaeger]", "exporters: [otlp/tempo]"))
    result = run_validate("observability", root=root)
    assert result.returncode == 1 and "undefined exporter 'otlp/tempo'" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.95, sum by (le, service) (rate(repotalk_event_hop_seconds_bucket{service="$service"}'
         "[$__rate_interval])))", {"repotalk_event_hop_seconds_bucket"}),
        ('sum(rate(a_total{x="y"}[5m])) / clamp_min(sum(rate(b_total[5m])), 1e-9) * 3600', {"a_total", "b_total"}),
        ("max by (queue) (repotalk_queue_depth) offset 5m", {"repotalk_queue_depth"}),
        ('sum(increase(repotalk_ai_cost_usd_total{model=~"gpt.*"}[$__range]))', {"repotalk_ai_cost_usd_total"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_dashboard_has_queries_and_latency_panels_link_their_traces() -> None:
    found = dashboards()
    assert {d["uid"] for _, d in found} == {"repotalk-turns", "repotalk-service", "repotalk-search", "repotalk-llm"}
    for path, dashboard in found:
        assert expressions(dashboard), path.name
        assert all(name.startswith(("repotalk_", "process_")) for name in dashboard_metric_names(dashboard))
        for expr_node in _targets(dashboard):
            if "histogram_quantile" in expr_node["expr"]:
                assert expr_node.get("exemplar") is True, f"{path.name}: {expr_node['expr']}"


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]

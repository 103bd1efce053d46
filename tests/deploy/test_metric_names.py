"""Every metric name used by an alert rule or the dashboard is one the app exports (SPEC §6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from icy_backend.metrics import Metrics, make_registry
from tests.deploy.conftest import ALERTS, DASHBOARD
from tests.deploy.promql import exposed_names, metric_names_in


@pytest.fixture(scope="module")
def exported() -> set[str]:
    metrics = Metrics(make_registry())
    return exposed_names(generate_latest(metrics.registry).decode())


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard_expressions() -> list[str]:
    """Every `expr` of a panel target and every query of a template variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [str(node["expr"]) for node in _walk(dashboard.get("panels", [])) if node.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            exprs.append(str(query.get("query", "") if isinstance(query, dict) else query or ""))
    return exprs


def test_tokenizer_finds_names_and_ignores_labels_strings_and_functions() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, path) (rate(icy_backend_http_request_duration_seconds_bucket"
        '{path!~"icy_backend_not_a_metric"}[$__rate_interval]))) > 0 and on (job) up{job="icy-backend"}'
        " unless icy_backend_job_leader offset 5m == 1 # icy_backend_in_a_comment"
    )
    expected = {"icy_backend_http_request_duration_seconds_bucket", "icy_backend_job_leader"}
    assert metric_names_in(expr) == expected


def test_exposition_resolves_histogram_and_counter_names(exported: set[str]) -> None:
    assert "icy_backend_http_request_duration_seconds_bucket" in exported
    assert "icy_backend_http_request_duration_seconds" not in exported  # bare histogram name selects nothing
    assert "icy_backend_http_requests_total" in exported
    assert "icy_backend_http_requests" not in exported
    assert "icy_backend_not_a_metric" not in exported


def test_rules_only_use_exported_metrics(exported: set[str]) -> None:
    used = set().union(*(metric_names_in(expr) for expr in rule_expressions()))
    assert used, "no metric names found in the rules"
    assert used - exported == set()


def test_dashboard_only_uses_exported_metrics(exported: set[str]) -> None:
    used = set().union(*(metric_names_in(expr) for expr in dashboard_expressions()))
    assert used, "no metric names found in the dashboard"
    assert used - exported == set()

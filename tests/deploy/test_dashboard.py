"""The Grafana dashboard: valid, generated from its builder, every panel queries exported metrics with valid PromQL."""

from __future__ import annotations

import json
import runpy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DASHBOARD
from tests.deploy.test_metric_names import dashboard_expressions

ROWS = {"HTTP", "Health checks", "Freshness", "External APIs and circuit breakers", "Jobs", "Business"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_committed_json_is_the_builder_output() -> None:
    builder = runpy.run_path(str(DASHBOARD.with_name("build_dashboard.py")))
    assert DASHBOARD.read_text() == builder["render"](), "re-run deploy/grafana/build_dashboard.py"


def test_dashboard_header(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]


def test_rows_present(dashboard: dict[str, Any]) -> None:
    rows = {panel["title"] for panel in _panels(dashboard) if panel["type"] == "row"}
    assert rows >= ROWS


def test_every_panel_has_datasource_and_query(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_panel_ids_unique_and_grid_fits(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def _as_promql(expr: str) -> str:
    """Grafana variables replaced by values Prometheus accepts."""
    for variable, value in (("$__rate_interval", "5m"), ("$__range", "1h"), ("$instance", ".*")):
        expr = expr.replace(variable, value)
    return expr


def test_every_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = [_as_promql(expr) for expr in dashboard_expressions() if not expr.startswith("label_values(")]
    rules = [{"record": f"dashboard:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

"""Alerting rules: promtool accepts them, their unit tests pass, every alert is well formed and tested."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ALERTS, OPERATIONS_DOC, RULE_TESTS

# Labels that are bounded and never hold secrets, addresses, amounts or URLs (SPEC §6).
SAFE_TEMPLATE_LABELS = {"path", "api_name", "job_name", "check", "transaction_type", "data_type", "instance"}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.yml"))


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a markdown document, plus explicit `<a id>` anchors."""
    anchors = set(re.findall(r'<a (?:id|name)="([^"]+)"', markdown))
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_promtool_check_rules(promtool: str) -> None:
    command = [promtool, "check", "rules", str(ALERTS)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout + done.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    files = _rule_test_files()
    assert files, "no promtool rule tests found"
    command = [promtool, "test", "rules", *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in _rule_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a not-firing test"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda alert: alert["alert"])
def test_alert_has_severity_runbook_and_safe_text(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"page", "ticket"}
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == f"docs/operations.md#{alert['alert'].lower()}"
    for key in ("summary", "description"):
        used = set(re.findall(r"\$labels\.(\w+)", annotations[key]))
        assert used <= SAFE_TEMPLATE_LABELS, f"{key} templates labels that may hold secrets: {used}"
        assert "$externalLabels" not in annotations[key]


def test_every_runbook_anchor_exists_in_operations_doc() -> None:
    anchors = github_anchors(OPERATIONS_DOC.read_text())
    missing = {
        alert["alert"] for alert in _alerts() if alert["annotations"]["runbook_url"].split("#", 1)[1] not in anchors
    }
    assert missing == set()


def test_alert_names_are_unique() -> None:
    names = [alert["alert"] for alert in _alerts()]
    assert len(names) == len(set(names))

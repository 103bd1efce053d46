"""The operator's commands as documented: every `icy-backend …` line in the docs is one the CLI accepts, the Docker
HEALTHCHECK asks a running server, Kubernetes probes stay HTTP, and the runbooks the alerts need exist."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
import yaml

from icy_backend.cli import build_parser
from tests.deploy.conftest import ALERTS, KUBERNETES, OPERATIONS_DOC, REPO

README = REPO / "README.md"


def _documented_commands() -> list[str]:
    found: list[str] = []
    for text in (OPERATIONS_DOC.read_text(), README.read_text(), ALERTS.read_text()):
        for snippet in re.findall(r"`(icy-backend [^`]+)`", text):
            # Alternatives (`release|reject`), placeholders and bracketed options are prose, not a command line.
            if any(mark in snippet for mark in ("|", "…", "[", "<")) or re.search(r"\b[A-Z]{2,}\b", snippet):
                continue
            words = snippet.split()
            # `icy-backend payouts` names a command and `check --url` an option: references, not command lines.
            if len(words) < 3 or words[-1].startswith("--"):
                continue
            found.append(snippet)
    return found


@pytest.mark.parametrize("command", _documented_commands())
def test_documented_commands_parse(command: str) -> None:
    argv = shlex.split(command)[1:]
    build_parser().parse_args(argv)  # SystemExit(2) on a command the CLI does not have


def test_documented_commands_cover_the_payouts_tool() -> None:
    documented = " ".join(_documented_commands())
    assert "icy-backend payouts list --status held" in documented
    assert "icy-backend check --url" in OPERATIONS_DOC.read_text()


def test_docker_healthcheck_asks_the_running_server() -> None:
    block = re.search(r"```dockerfile\n(.*?)```", OPERATIONS_DOC.read_text(), re.S)
    assert block is not None, "docs/operations.md lost its HEALTHCHECK example"
    line = block.group(1).replace("\\\n", " ")
    match = re.search(r"HEALTHCHECK\b.*?\bCMD\s+(\[.*\])", line)
    assert match is not None
    argv: list[str] = json.loads(match.group(1))
    assert argv[0] == "icy-backend"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "check"
    assert args.url == "http://127.0.0.1:8080"
    timeout = float(re.search(r"--timeout=(\d+)s", line).group(1))  # type: ignore[union-attr]
    assert args.timeout < timeout  # the command gives up before Docker kills it


def _containers() -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                containers.extend(doc["spec"]["template"]["spec"]["containers"])
    return containers


def test_kubernetes_probes_stay_http() -> None:
    for container in _containers():
        for name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container[name]
            assert "httpGet" in probe and "exec" not in probe, name


def test_runbook_sections_exist() -> None:
    text = OPERATIONS_DOC.read_text()
    for heading in (
        "## Held payouts",
        "## The daily limit",
        "## Suspected signer-key leak",
        "## Container health checks",
    ):
        assert heading in text
    # The configuration example gives prod what it requires.
    for name in ("DB_HOST", "BTC_PAYOUT_MAX_SATS", "BTC_PAYOUT_DAILY_LIMIT_SATS"):
        assert f"--from-literal={name}=" in text

"""Fixtures for the operations kit: the repository's deploy/ paths and a `promtool` binary.

promtool comes from Debian's `prometheus` package. When it is missing, it is installed (apt-get, as root) only
if `CI=true` or `ICY_INSTALL_TOOLS=1`; otherwise the tests that need it skip with a message saying how to get
it. Under CI a failed install fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci import in_ci

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests"
DASHBOARD = DEPLOY / "grafana" / "icy-backend.json"
KUBERNETES = DEPLOY / "kubernetes"
OPERATIONS_DOC = REPO / "docs" / "operations.md"

_INSTALL_HINT = (
    "promtool not found: install Debian's `prometheus` package (apt-get install -y prometheus) "
    "or run with ICY_INSTALL_TOOLS=1 to let the tests install it"
)


def _in_ci() -> bool:
    return in_ci()


def _may_install() -> bool:
    return _in_ci() or os.environ.get("ICY_INSTALL_TOOLS") == "1"


def _apt_install_prometheus() -> str:
    """Install Debian's prometheus package (promtool). Returns the log tail for error messages."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available on this machine"
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            return "not root and no sudo: cannot run apt-get"
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for command in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "prometheus"]):
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, env=env, timeout=900, check=False)
        log.append(done.stdout[-2000:] + done.stderr[-2000:])
        if done.returncode != 0:
            break
    return "\n".join(log)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of `promtool`, installing it under CI (or ICY_INSTALL_TOOLS=1); skips elsewhere when missing."""
    found = shutil.which("promtool")
    if found:
        return found
    if not _may_install():
        pytest.skip(_INSTALL_HINT)
    log = _apt_install_prometheus()
    found = shutil.which("promtool")
    if found:
        return found
    message = f"could not install promtool:\n{log}"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)

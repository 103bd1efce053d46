"""The real-EVM tests never skip silently in CI: a missing tool is a failure there, a skip elsewhere."""

from __future__ import annotations

import pytest

from icy_backend.sim import anvil
from tests.ci import in_ci
from tests.evm_real import conftest


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", "on"])
def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setattr(anvil, "missing_tools", lambda: ["anvil (npm)"])
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="failure here"):
        conftest.require_tools()


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.setattr(anvil, "missing_tools", lambda: ["anvil (npm)"])
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="install-evm-tools"):
        conftest.require_tools()


def test_tools_present_here_when_ci() -> None:
    """On CI the install step has run: every tool is there (this is what makes the suite above real)."""
    if not in_ci():
        pytest.skip("only meaningful under CI")
    assert anvil.missing_tools() == []

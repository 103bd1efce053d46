"""CI detection and the dependency lock: a CI run never skips silently, and the lock pins every dependency."""

from __future__ import annotations

import pytest

from scripts.check_lock import missing_pins
from tests.ci import in_ci, require_module, skip_or_fail


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "Yes", "on"])
def test_every_usual_spelling_of_ci_counts(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception):
        skip_or_fail("tool missing")
    with pytest.raises(pytest.fail.Exception):
        require_module("surely_not_an_installed_module_xyz")


@pytest.mark.parametrize("value", ["", "false", "0", "no"])
def test_outside_ci_a_missing_tool_skips(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception):
        require_module("surely_not_an_installed_module_xyz")


def test_the_lock_pins_every_dependency_of_pyproject() -> None:
    assert missing_pins() == []

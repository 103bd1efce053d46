"""Is this a CI run? ``CI=true``, ``CI=1`` or ``CI=yes`` (any case) all mean yes.

Under CI a missing tool or service is a failure, never a silent skip: a green CI must mean the tests ran.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

_TRUE = {"true", "1", "yes", "on"}


def in_ci() -> bool:
    """True when the CI variable says so (``true``/``1``/``yes``/``on``, any case)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


def skip_or_fail(reason: str) -> None:
    """Skip outside CI; fail under CI (a skipped test there would hide a broken install)."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a missing tool or service is a failure here)")
    pytest.skip(reason)


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """``pytest.importorskip`` that fails instead of skipping under CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_or_fail(reason or f"{name} is not installed")
        raise  # unreachable: skip_or_fail raises

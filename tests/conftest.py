"""Shared fixtures: the anyio backend, settings for tests, and a real PostgreSQL database when reachable."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

"""Fixtures shared by the domain and route tests: a private PostgreSQL database per module, emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.icy_backend.domain.support import fresh_engine, private_database


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    yield from private_database()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await fresh_engine(db_url)
    yield engine
    await engine.dispose()

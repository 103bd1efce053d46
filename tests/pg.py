"""Real PostgreSQL for tests: a dedicated database per test module, skipped only outside CI when unreachable."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from icy_backend.db.migrate import upgrade
from icy_backend.db.tables import ALL_TABLES
from tests.ci import skip_or_fail

PG_HOST = os.environ.get("ICY_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ICY_TEST_PG_PORT", "5432"))
ADMIN_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test"


def pg_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def require_pg() -> None:
    """Skip when PostgreSQL is unreachable — but never under CI=true, where that is a failure."""
    if pg_reachable():
        return
    skip_or_fail("PostgreSQL is not reachable at 127.0.0.1:5432")


def unique_db_name(prefix: str) -> str:
    """A database name unique to this test process: several suite runs may share one PostgreSQL server."""
    return f"{prefix}_{os.getpid()}"


async def drop_database(name: str) -> None:
    """Drop database ``name``, terminating its sessions first."""
    admin = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        await admin.dispose()


async def recreate_database(name: str) -> str:
    """Drop and create database ``name``; return its asyncpg URL."""
    require_pg()
    await drop_database(name)
    admin = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return url_for(name)


def url_for(name: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"


async def _create_migrated(name: str) -> str:
    url = await recreate_database(name)
    engine = create_async_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


def private_database(prefix: str) -> Iterator[str]:
    """For a module- or session-scoped fixture: a uniquely named, migrated database, dropped at the end.

    Other tests use the shared ``test`` database concurrently, so suites that empty tables get their own.
    """
    require_pg()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield asyncio.run(_create_migrated(name))
    finally:
        asyncio.run(drop_database(name))


async def emptied_engine(url: str, **kwargs: int) -> AsyncEngine:
    """An engine on ``url`` with every table of the schema emptied (identities restarted)."""
    engine = create_async_engine(url, **kwargs)
    names = ", ".join(t.name for t in ALL_TABLES)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    return engine

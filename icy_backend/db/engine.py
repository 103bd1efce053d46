"""The async engine: pool settings from config and a connect timeout, so a dead database cannot hang us."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from icy_backend.settings import Settings


def make_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """Create the engine for ``url`` (default: the configured database)."""
    url = url or settings.database_url
    timeout = settings.DB_CONNECT_TIMEOUT_SECONDS
    # hide_parameters: error messages (and so logs) never carry bound values such as addresses or amounts.
    kwargs: dict[str, Any] = {"pool_pre_ping": False, "hide_parameters": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": timeout}
    else:
        kwargs.update(
            pool_size=settings.DB_POOL_SIZE,
            max_overflow=settings.DB_MAX_OVERFLOW,
            pool_timeout=timeout,
            pool_recycle=1800,
            connect_args={"timeout": timeout, "command_timeout": 30},
        )
    return create_async_engine(url, **kwargs)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def insert_ignore(engine: AsyncEngine, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for the engine's dialect (idempotent indexer inserts)."""
    if is_postgres(engine):
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()

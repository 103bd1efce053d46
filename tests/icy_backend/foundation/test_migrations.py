"""Migrations create the same tables, columns and constraints on SQLite and PostgreSQL, and go down cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.engine import make_engine
from icy_backend.db.migrate import downgrade, upgrade
from icy_backend.db.tables import metadata
from icy_backend.settings import load_settings
from tests.pg import drop_database, recreate_database, unique_db_name

pytestmark = pytest.mark.anyio


def _schema(sync_conn: Any) -> dict[str, Any]:
    insp = inspect(sync_conn)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": sorted((c["name"], c["nullable"]) for c in insp.get_columns(table)),
            "pk": sorted(insp.get_pk_constraint(table)["constrained_columns"]),
            "unique": sorted(tuple(sorted(u["column_names"])) for u in insp.get_unique_constraints(table)),
            "indexes": sorted(tuple(i["column_names"]) for i in insp.get_indexes(table) if not i.get("unique")),
        }
    return out


async def _roundtrip(engine: AsyncEngine) -> dict[str, Any]:
    await upgrade(engine)
    async with engine.connect() as conn:
        schema = await conn.run_sync(_schema)
    await downgrade(engine)
    async with engine.connect() as conn:
        after = await conn.run_sync(lambda c: [t for t in inspect(c).get_table_names() if t != "alembic_version"])
    assert after == []
    await upgrade(engine)  # up again after down
    await engine.dispose()
    return schema


async def test_same_schema_on_both_backends_and_matches_tables(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=None)
    sqlite_schema = await _roundtrip(make_engine(settings, f"sqlite+aiosqlite:///{tmp_path}/m.sqlite3"))
    name = unique_db_name("icy_migrations")
    pg_url = await recreate_database(name)
    try:
        pg_schema = await _roundtrip(make_engine(settings, pg_url))
    finally:
        await drop_database(name)
    assert sqlite_schema == pg_schema
    assert set(sqlite_schema) == set(metadata.tables)
    for name, table in metadata.tables.items():
        assert sorted(c.name for c in table.columns) == [c for c, _ in sqlite_schema[name]["columns"]], name
    assert ("swap_transaction_hash",) in pg_schema["onchain_btc_processed_transactions"]["unique"]
    assert ("log_index", "transaction_hash") in pg_schema["onchain_icy_transactions"]["unique"]

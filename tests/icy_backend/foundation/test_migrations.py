"""Migrations create the same tables, columns and constraints on SQLite and PostgreSQL, and go down cleanly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.engine import make_engine
from icy_backend.db.migrate import downgrade, upgrade
from icy_backend.db.tables import metadata
from icy_backend.db.types import UTCDateTime
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
    assert ("swap_event_index", "swap_transaction_hash") in pg_schema["onchain_btc_processed_transactions"]["unique"]
    assert ("txid",) in pg_schema["btc_payout_candidates"]["unique"]
    assert ("log_index", "transaction_hash") in pg_schema["onchain_icy_transactions"]["unique"]


_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_TX = "0x" + "ab" * 32


async def _upgrade_with_rows(engine: AsyncEngine) -> dict[str, Any]:
    """Upgrade a database that holds rows of revision 0001 to head; return what the rows became."""
    await upgrade(engine, "0001")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO onchain_btc_processed_transactions (id, swap_transaction_hash, btc_address, subtotal,"
                " service_fee, network_fee, total, status, btc_transaction_hash, raw_tx, attempts, created_at,"
                " updated_at) VALUES"
                " (1, :h1, 'tb1qexample', '10000', '3000', '141', '7000', 'completed', :t1, 'aa', 1, :now, :now),"
                " (2, :h2, 'tb1qexample', '10000', '3000', NULL, '7000', 'pending', NULL, NULL, 0, :now, :now),"
                " (3, :h3, 'tb1qexample', '10000', '3000', '150', '7000', 'broadcasting', :t3, 'bb', 1, :now, :now)"
            ).bindparams(bindparam("now", type_=UTCDateTime())),
            {"h1": _TX, "h2": "0x" + "cd" * 32, "h3": "0x" + "ef" * 32, "t1": "11" * 32, "t3": "33" * 32, "now": _NOW},
        )
        for log_index in (7, 3):
            await conn.execute(
                text(
                    "INSERT INTO onchain_icy_swap_transactions (transaction_hash, log_index, block_number, icy_amount,"
                    " from_address, btc_address, btc_amount, created_at, updated_at)"
                    " VALUES (:h, :li, 5, '1', '0x00', 'tb1q', '1', :now, :now)"
                ).bindparams(bindparam("now", type_=UTCDateTime())),
                {"h": _TX, "li": log_index, "now": _NOW},
            )
        await conn.execute(
            text(
                "INSERT INTO swap_requests (id, icy_amount, btc_address, icy_tx, status, evm_tx_hash, signed_tx,"
                " created_at, updated_at) VALUES (1, '1', 'tb1q', :h, 'sending', :h, '0x02', :now, :now)"
            ).bindparams(bindparam("now", type_=UTCDateTime())),
            {"h": _TX, "now": _NOW},
        )
    await upgrade(engine)
    async with engine.connect() as conn:
        requests = (
            await conn.execute(text("SELECT id, status, evm_tx_hash, replaced_tx_hashes FROM swap_requests"))
        ).all()
        payouts = (
            await conn.execute(
                text(
                    "SELECT id, swap_event_index, status, confirmations, reorged, reorged_at_block"
                    " FROM onchain_btc_processed_transactions"
                    " ORDER BY id"
                )
            )
        ).all()
        candidates = (
            await conn.execute(
                text("SELECT payout_id, txid, raw_tx, fee, status FROM btc_payout_candidates ORDER BY id")
            )
        ).all()
        swaps = (
            await conn.execute(
                text("SELECT log_index, event_index FROM onchain_icy_swap_transactions ORDER BY log_index")
            )
        ).all()
    await engine.dispose()
    return {
        "payouts": [tuple(r) for r in payouts],
        "candidates": [tuple(r) for r in candidates],
        "swaps": [tuple(r) for r in swaps],
        "requests": [tuple(r) for r in requests],
    }


async def test_upgrade_migrates_rows_of_the_previous_revision(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=None)
    sqlite = await _upgrade_with_rows(make_engine(settings, f"sqlite+aiosqlite:///{tmp_path}/u.sqlite3"))
    name = unique_db_name("icy_migrate_rows")
    pg_url = await recreate_database(name)
    try:
        pg = await _upgrade_with_rows(make_engine(settings, pg_url))
    finally:
        await drop_database(name)
    for result in (sqlite, pg):
        # Every existing payout was its transaction's first Swap event; a completed one is final (1 confirmation).
        assert [(p[0], p[1], p[2], p[3], bool(p[4]), p[5]) for p in result["payouts"]] == [
            (1, 0, "completed", 1, False, None),
            (2, 0, "pending", 0, False, None),
            (3, 0, "broadcasting", 0, False, None),
        ]
        # A payout with a stored transaction keeps it as its one candidate.
        assert result["candidates"] == [(1, "11" * 32, "aa", "141", "active"), (3, "33" * 32, "bb", "150", "active")]
        # Swap rows get their position among their transaction's Swap events.
        assert result["swaps"] == [(3, 0), (7, 1)]
        # A swap request in flight keeps its transaction and has replaced none (revision 0004).
        assert result["requests"] == [(1, "sending", _TX, None)]


async def _upgrade_0004_then_move(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """A held payout of revision 0004 can be released after the upgrade, and the release is recorded."""
    from icy_backend.domain import payout_admin

    await upgrade(engine, "0004")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO onchain_btc_processed_transactions (id, swap_transaction_hash, swap_event_index,"
                " btc_address, subtotal, service_fee, total, status, hold_reason, attempts, created_at, updated_at)"
                " VALUES (1, :h, 0, 'tb1qexample', '10000', '3000', '7000', 'held', 'over_limit', 0, :now, :now)"
            ).bindparams(bindparam("now", type_=UTCDateTime())),
            {"h": _TX, "now": _NOW},
        )
    await upgrade(engine)
    await payout_admin.release(engine, 1, "ops", "checked")
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT payout_id, action, old_status, new_status, actor, reason FROM payout_operator_actions")
            )
        ).all()
    await engine.dispose()
    return [tuple(r) for r in rows]


async def test_upgrade_to_operator_actions_keeps_payouts_movable(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=None)
    sqlite = await _upgrade_0004_then_move(make_engine(settings, f"sqlite+aiosqlite:///{tmp_path}/a.sqlite3"))
    name = unique_db_name("icy_migrate_actions")
    pg_url = await recreate_database(name)
    try:
        pg = await _upgrade_0004_then_move(make_engine(settings, pg_url))
    finally:
        await drop_database(name)
    assert sqlite == pg == [(1, "release", "held", "pending", "ops", "checked")]

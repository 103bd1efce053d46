"""The compare-and-set move shared by both money state machines (payouts and swap requests), on PostgreSQL.

Every state move is ``UPDATE … WHERE id = … AND status = <expected>``: a writer that read a stale state loses, and
of two writers racing from the same state exactly one wins. Each test here fails when that condition is removed.
"""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import swap_requests
from icy_backend.domain.row_machine import fail_row, move_row

pytestmark = pytest.mark.anyio


async def _payout(engine: AsyncEngine, status: str) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(payouts)
            .values(
                swap_transaction_hash="0x" + "ab" * 32,
                swap_event_index=0,
                btc_address="tb1qexample",
                subtotal=10_000,
                service_fee=3_000,
                total=7_000,
                status=status,
                attempts=0,
            )
            .returning(payouts.c.id)
        )
        return int(result.scalar_one())


async def _status(engine: AsyncEngine, row_id: int) -> str:
    async with engine.connect() as conn:
        return str(await conn.scalar(select(payouts.c.status).where(payouts.c.id == row_id)))


async def test_a_move_from_a_state_the_row_is_not_in_changes_nothing(engine: AsyncEngine) -> None:
    row_id = await _payout(engine, "completed")
    async with engine.begin() as conn:
        assert not await move_row(conn, payouts, row_id, "broadcasting", status="pending", raw_tx=None)
        assert not await fail_row(conn, payouts, row_id, "pending", "below_dust")
    assert await _status(engine, row_id) == "completed"  # a paid payout is never sent back or failed


async def test_extra_conditions_are_part_of_the_compare(engine: AsyncEngine) -> None:
    row_id = await _payout(engine, "broadcasting")
    async with engine.begin() as conn:
        stale = payouts.c.btc_transaction_hash == "ff" * 32  # a writer that read another candidate
        assert not await move_row(conn, payouts, row_id, "broadcasting", stale, status="pending")
    assert await _status(engine, row_id) == "broadcasting"


async def test_of_two_racing_writers_exactly_one_moves_the_row(engine: AsyncEngine) -> None:
    row_id = await _payout(engine, "pending")
    outcomes: list[bool] = []

    async def writer(target: str) -> None:
        async with engine.begin() as conn:
            outcomes.append(await move_row(conn, payouts, row_id, "pending", status=target))

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer, "broadcasting")
        tg.start_soon(writer, "failed")
    assert sorted(outcomes) == [False, True]
    assert await _status(engine, row_id) in {"broadcasting", "failed"}


async def test_swap_requests_use_the_same_compare(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        row_id = int(
            (
                await conn.execute(
                    insert(swap_requests)
                    .values(icy_amount=1, btc_address="tb1qexample", icy_tx="0x" + "cd" * 32, status="completed")
                    .returning(swap_requests.c.id)
                )
            ).scalar_one()
        )
        assert not await move_row(conn, swap_requests, row_id, "sending", status="pending")
        status = await conn.scalar(select(swap_requests.c.status).where(swap_requests.c.id == row_id))
    assert status == "completed"

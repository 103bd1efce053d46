"""Operator moves against the real payout processor and the Esplora simulator's payments list: a held payout is
never paid; rejected, it is never paid; released, it is paid exactly once (one ``confirmed`` payment)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend import payouts_cli
from icy_backend.cli import build_parser
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.domain.payouts import PayoutProcessor
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.settings import Settings
from tests.icy_backend.money.conftest import WIF, BtcWorld, add_payout, payout_row, recipient

pytestmark = pytest.mark.anyio


async def operator(db_url: str, *argv: str) -> int:
    settings = Settings(_env_file=None, APP_ENV="test", DATABASE_URL=db_url)
    args = build_parser().parse_args(["payouts", *argv])
    return await payouts_cli.run(settings, args, io.StringIO(), io.StringIO())


async def add_held(engine: AsyncEngine, n: int, address: str, total: int) -> int:
    payout_id = await add_payout(engine, n, address, total)
    async with engine.begin() as conn:
        await conn.execute(update(T).where(T.c.id == payout_id).values(status="held", hold_reason="over_limit"))
    return payout_id


async def run_processor(world: BtcWorld, engine: AsyncEngine, runs: int = 4) -> None:
    """Several payout runs with a block mined after each (broadcast, then confirm)."""
    proc = PayoutProcessor(engine, world.esplora(), world.prices(), world.settings, wallet_from_wif(WIF, "testnet"))
    for _ in range(runs):
        await proc.run()
        world.esplora_sim.mine()


def confirmed_to(world: BtcWorld, address: str) -> list[dict[str, Any]]:
    return [p for p in world.paid_to(address) if p.get("status", "confirmed") == "confirmed"]


async def test_held_then_rejected_is_never_paid(world: BtcWorld, engine: AsyncEngine, money_db_url: str) -> None:
    world.fund(1_000_000, 1_000_000)
    address = recipient(61)
    payout_id = await add_held(engine, 61, address, 80_000)
    await run_processor(world, engine)
    assert world.paid_to(address) == []  # held: never built, signed or sent
    assert (await payout_row(engine, payout_id))["status"] == "held"

    assert await operator(money_db_url, "reject", str(payout_id), "--reason", "forged", "--actor", "t") == 0
    await run_processor(world, engine)
    assert world.paid_to(address) == []
    row = await payout_row(engine, payout_id)
    assert (row["status"], row["failure_reason"], row["btc_transaction_hash"]) == ("failed", "rejected", None)
    # A release after the reject is refused: a rejected payout stays unpaid.
    assert await operator(money_db_url, "release", str(payout_id)) == 1
    await run_processor(world, engine, runs=2)
    assert world.paid_to(address) == []


async def test_held_then_released_is_paid_once(world: BtcWorld, engine: AsyncEngine, money_db_url: str) -> None:
    world.fund(1_000_000, 1_000_000)
    address = recipient(62)
    other = recipient(63)
    payout_id = await add_held(engine, 62, address, 90_000)
    other_id = await add_payout(engine, 63, other, 40_000)  # an ordinary payout alongside
    await run_processor(world, engine)
    assert world.paid_to(address) == []
    assert [p["value"] for p in confirmed_to(world, other)] == [40_000]

    assert await operator(money_db_url, "release", str(payout_id), "--actor", "t") == 0
    # Released twice by mistake: the second is refused, nothing changes.
    assert await operator(money_db_url, "release", str(payout_id), "--actor", "t") == 1
    await run_processor(world, engine)
    paid = confirmed_to(world, address)
    assert [p["value"] for p in paid] == [90_000]
    assert len(world.paid_to(address)) == 1  # exactly one payment ever accepted, not only one confirmed
    row = await payout_row(engine, payout_id)
    assert row["status"] == "completed"
    assert row["btc_transaction_hash"] == paid[0]["txid"]
    assert row["released_at"] is not None
    # A completed payout cannot be rejected or held; more runs pay nothing more.
    assert await operator(money_db_url, "reject", str(payout_id), "--reason", "late") == 1
    assert await operator(money_db_url, "hold", str(payout_id), "--reason", "late") == 1
    await run_processor(world, engine, runs=2)
    assert len(world.paid_to(address)) == 1
    assert len(world.paid_to(other)) == 1
    assert (await payout_row(engine, other_id))["status"] == "completed"


async def test_an_operator_hold_keeps_a_pending_payout_from_being_paid(
    world: BtcWorld, engine: AsyncEngine, money_db_url: str
) -> None:
    world.fund(1_000_000)
    address = recipient(64)
    payout_id = await add_payout(engine, 64, address, 70_000)
    assert await operator(money_db_url, "hold", str(payout_id), "--reason", "signer key review", "--actor", "t") == 0
    await run_processor(world, engine)
    assert world.paid_to(address) == []
    assert await operator(money_db_url, "release", str(payout_id), "--actor", "t") == 0
    await run_processor(world, engine)
    assert [p["value"] for p in confirmed_to(world, address)] == [70_000]
    assert len(world.paid_to(address)) == 1

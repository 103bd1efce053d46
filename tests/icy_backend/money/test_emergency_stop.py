"""The runbook's emergency stop (docs/operations.md, *The daily limit*): with BTC_PAYOUT_MAX_SATS=1 and
BTC_PAYOUT_DAILY_LIMIT_SATS=1 the payout job sends nothing — a pending payout waits with daily_limit — and with
the real limits back it is paid exactly once."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.domain.payouts import PayoutProcessor
from icy_backend.domain.wallet import wallet_from_wif
from icy_backend.settings import Settings, load_settings
from tests.icy_backend.money.conftest import WIF, BtcWorld, add_payout, payout_row, recipient

pytestmark = pytest.mark.anyio


async def runs(world: BtcWorld, engine: AsyncEngine, settings: Settings, n: int = 4) -> None:
    proc = PayoutProcessor(engine, world.esplora(), world.prices(), settings, wallet_from_wif(WIF, "testnet"))
    for _ in range(n):
        await proc.run()
        world.esplora_sim.mine()


async def test_both_limits_at_one_stop_every_payout_until_restored(world: BtcWorld, engine: AsyncEngine) -> None:
    stopped = world.settings.model_copy(update={"BTC_PAYOUT_MAX_SATS": 1, "BTC_PAYOUT_DAILY_LIMIT_SATS": 1})
    # The runbook's values pass startup validation (the cap does not exceed the daily limit).
    load_settings({"BTC_PAYOUT_MAX_SATS": "1", "BTC_PAYOUT_DAILY_LIMIT_SATS": "1"}, env_file=None)
    world.fund(1_000_000, 1_000_000)
    address = recipient(71)
    payout_id = await add_payout(engine, 71, address, 60_000)  # created before the stop: pending, not held
    await runs(world, engine, stopped)
    assert world.paid_to(address) == []
    row = await payout_row(engine, payout_id)
    assert (row["status"], row["failure_reason"]) == ("pending", "daily_limit")

    await runs(world, engine, world.settings)  # the real limits (unlimited here) back
    paid = [p for p in world.paid_to(address) if p.get("status", "confirmed") == "confirmed"]
    assert [p["value"] for p in paid] == [60_000]
    assert len(world.paid_to(address)) == 1

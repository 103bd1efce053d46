"""Pure parts of the indexers: the price-outlier test in exact integers, event indexes, the finality tag."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.evm import Log
from icy_backend.db.engine import make_engine
from icy_backend.db.migrate import upgrade
from icy_backend.domain.indexers.swap import event_indexes
from icy_backend.domain.indexers.swap_payouts import is_price_outlier, payout_row
from icy_backend.domain.swap_validation import PricingUnavailable
from icy_backend.settings import load_settings
from icy_backend.sim.combined import Simulators
from tests.icy_backend.domain.indexer_support import ICY, cursor, fair_swap, payout_rows, swap_job, swap_rows, user
from tests.icy_backend.domain.support import sim_env

RATIO = 4 * 10**13  # 400 000 ICY per BTC: 100 ICY = 25 000 sats


def test_price_outlier_boundary_is_exact() -> None:
    tolerance = Decimal("0.05")
    assert not is_price_outlier(100 * ICY, 25_000, RATIO, tolerance)
    assert not is_price_outlier(100 * ICY, 26_250, RATIO, tolerance)  # exactly +5 %
    assert is_price_outlier(100 * ICY, 26_251, RATIO, tolerance)
    assert is_price_outlier(100 * ICY, 75_000, RATIO, tolerance)  # three times its value
    assert not is_price_outlier(100 * ICY, 25_000, RATIO, Decimal("0"))
    assert is_price_outlier(100 * ICY, 25_001, RATIO, Decimal("0"))
    with pytest.raises(PricingUnavailable):
        is_price_outlier(100 * ICY, 1, 0, tolerance)


def test_holds_are_decided_at_creation() -> None:
    settings = load_settings({"APP_ENV": "test", "BTC_PAYOUT_MAX_SATS": "20000"}, env_file=None)
    address = user(1)
    fair = payout_row("0xa", 0, 100 * ICY, address, 25_000, settings, RATIO, None)
    assert (fair["status"], fair["hold_reason"]) == ("held", "over_limit")  # total 22 000 > 20 000
    small = payout_row("0xa", 1, 80 * ICY, address, 20_000, settings, RATIO, None)
    assert (small["status"], small["hold_reason"], small["swap_event_index"]) == ("pending", None, 1)
    greedy = payout_row("0xa", 2, 100 * ICY, address, 75_000, settings, RATIO, None)
    assert (greedy["status"], greedy["hold_reason"]) == ("held", "price_outlier")
    dust = payout_row("0xa", 3, 100 * ICY, address, 3_100, settings, None, None)  # failed needs no price
    assert (dust["status"], dust["failure_reason"]) == ("failed", "below_dust")
    with pytest.raises(PricingUnavailable):
        payout_row("0xa", 4, 100 * ICY, address, 25_000, settings, None, None)


def _log(tx: str, block: int, index: int) -> Log:
    return Log("0xswap", ["0xtopic"], b"", block, tx, index, "0xhash")


def test_event_index_is_the_position_among_the_transactions_swap_events() -> None:
    logs = [_log("0xb", 7, 9), _log("0xa", 7, 2), _log("0xa", 7, 5), _log("0xc", 8, 0), _log("0xb", 7, 11)]
    assert event_indexes(logs) == [0, 0, 1, 0, 1]


@pytest.mark.anyio
@pytest.mark.postgres
async def test_finality_tag_sets_the_scan_target_on_the_endpoint(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    early = fair_swap(sims, user(2))
    sims.evm.mine_block()
    sims.evm.mine_empty(3)
    late = fair_swap(sims, user(3))
    sims.evm.mine_block()
    sims.evm.finality_depth = 2  # the node's finalized block is 2 below its head
    async with sim_env(sims, BLOCKCHAIN_FINALITY_TAG="finalized", BLOCKCHAIN_CONFIRMATIONS="1") as env:
        await swap_job(engine, env)()
        assert await cursor(engine) == sims.evm.head - 2  # not head - BLOCKCHAIN_CONFIRMATIONS
        assert [r["transaction_hash"] for r in await swap_rows(engine)] == [early]
        sims.evm.mine_empty(2)
        await swap_job(engine, env)()
        assert await cursor(engine) == sims.evm.head - 2
        assert [r["transaction_hash"] for r in await swap_rows(engine)] == [early, late]


@pytest.mark.anyio
async def test_reorg_handling_runs_on_sqlite_too(tmp_path: Path) -> None:
    """Sandbox mode indexes into SQLite: rollback (DELETE … RETURNING), detach and re-attach work there too."""
    sims = Simulators()
    sims.seed_demo()
    txs = [fair_swap(sims, user(20 + n)) for n in range(2)]
    sims.evm.mine_block()
    sims.evm.mine_block()
    settings = load_settings({"APP_ENV": "test"}, env_file=None)
    engine = make_engine(settings, f"sqlite+aiosqlite:///{tmp_path}/sandbox.sqlite3")
    try:
        await upgrade(engine)
        async with sim_env(sims, BLOCKCHAIN_CONFIRMATIONS="1") as env:
            run = swap_job(engine, env)
            await run()
            assert len(await payout_rows(engine)) == 2
            sims.evm.reorg(2, reinclude=True)
            await run()
            rows = await swap_rows(engine)
            assert sorted((r["transaction_hash"], r["event_index"]) for r in rows) == sorted((t, 0) for t in txs)
            assert len(await payout_rows(engine)) == 2
            sims.evm.reorg(2, reinclude=False)
            await run()
            assert await swap_rows(engine) == []
            assert await payout_rows(engine) == []
    finally:
        await engine.dispose()

"""From Swap event to the operator's decision, with the real swap indexer and payout job: payouts held at creation
(over the cap, price outlier) are never paid; released by `icy-backend payouts release` they are paid once; rejected
they are never paid. "Paid" = a ``confirmed`` entry in the Esplora simulator's payments list."""

from __future__ import annotations

import io

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend import payouts_cli
from icy_backend.cli import build_parser
from icy_backend.settings import Settings
from icy_backend.sim.combined import Simulators
from tests.icy_backend.domain.indexer_support import ICY, fair_swap, paid, pay_out, payout_rows, swap_job, user
from tests.icy_backend.domain.support import sim_env

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def operator(engine: AsyncEngine, *argv: str) -> int:
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(_env_file=None, APP_ENV="test", DATABASE_URL=url)
    return await payouts_cli.run(settings, build_parser().parse_args(["payouts", *argv]), io.StringIO(), io.StringIO())


async def test_held_payouts_wait_for_the_operator_then_are_paid_once_or_never(engine: AsyncEngine) -> None:
    sims = Simulators()
    sims.seed_demo()
    small, large, greedy = user(21), user(22), user(23)
    fair_swap(sims, small, icy=20 * ICY)
    fair_swap(sims, large, icy=200 * ICY)
    fair_swap(sims, greedy, times=3)  # pays three times its ICY's worth: what a leaked signer key makes
    sims.evm.mine_empty(2)
    cap = sims.demo_btc_amount(100 * ICY)
    settings = {"BLOCKCHAIN_LOG_CHUNK_BLOCKS": "10", "BLOCKCHAIN_CONFIRMATIONS": "1", "BTC_PAYOUT_MAX_SATS": str(cap)}
    async with sim_env(sims, **settings) as env:
        await swap_job(engine, env)()
        rows = {p["btc_address"]: p for p in await payout_rows(engine)}
        assert {a: (p["status"], p["hold_reason"]) for a, p in rows.items()} == {
            small: ("pending", None),
            large: ("held", "over_limit"),
            greedy: ("held", "price_outlier"),
        }
        await pay_out(engine, env)
        assert len(paid(sims, small)) == 1
        for address in (large, greedy):
            assert [p for p in sims.esplora.payments() if p["address"] == address] == []

        # The operator looks, releases the large one and rejects the outlier.
        assert await operator(engine, "release", str(rows[large]["id"]), "--actor", "ops") == 0
        assert (
            await operator(engine, "reject", str(rows[greedy]["id"]), "--reason", "forged swap", "--actor", "ops") == 0
        )
        await pay_out(engine, env)
        await swap_job(engine, env)()  # a re-scan changes nothing: released is not held again, rejected stays
        await pay_out(engine, env)

        assert [p["value"] for p in paid(sims, large)] == [rows[large]["total"]]
        assert len([p for p in sims.esplora.payments() if p["address"] == large]) == 1
        assert [p for p in sims.esplora.payments() if p["address"] == greedy] == []
        assert len(paid(sims, small)) == 1
        after = {p["btc_address"]: (p["status"], p["failure_reason"]) for p in await payout_rows(engine)}
        assert after[large][0] == "completed"
        assert after[greedy] == ("failed", "rejected")
        # Too late for a change of mind: both refused.
        assert await operator(engine, "release", str(rows[greedy]["id"])) == 1
        assert await operator(engine, "reject", str(rows[large]["id"]), "--reason", "late") == 1

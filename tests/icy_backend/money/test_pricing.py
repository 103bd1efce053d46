"""Pricing uses only complete figures (SPEC §9): Mochi Pay's last good figure or 503 ``oracle_incomplete``, and
a treasury net of the payouts it owes. Real PostgreSQL, simulators, the real routes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from icy_backend.breakers import Breakers
from icy_backend.clients.mochi import MochiPayClient
from icy_backend.db.tables import onchain_btc_processed_transactions, swap_requests
from icy_backend.domain.oracle import OracleIncomplete, OracleService
from icy_backend.domain.sandbox import seed_locked_treasuries
from icy_backend.domain.swap_requests import SwapRequestProcessor
from icy_backend.metrics.families import Metrics
from icy_backend.metrics.registry import make_registry
from icy_backend.routes.oracle import routes as oracle_routes
from icy_backend.routes.swap import routes as swap_routes
from icy_backend.routes.swap_info import routes as info_routes
from icy_backend.sim.faults import Fault
from icy_backend.sim.mochi import MochiSim
from jobs.context import JobContext
from jobs.indexers import make_icy_indexer
from tests.icy_backend.money.conftest import (
    HOLDER,
    SIGNER_ADDRESS,
    SwapWorld,
    add_payout,
    api_client,
    make_settings,
    recipient,
)

pytestmark = pytest.mark.anyio

ICY = 10**18
LOCKED = "0x" + "33" * 20
ICY_1000 = str(1000 * ICY)
FAIR_1000 = "1000000"  # 1000 ICY at 100 000 ICY/BTC
# The old rule counted a failed Mochi Pay as 0: 70 000 ICY against 1 BTC, so 1000 ICY "was worth"
# 10^21 // (7 * 10^12 * 100) sats, 43 % more than its fair value.
OLD_RULE_1000 = str(10**21 // (7 * 10**12 * 100))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class PricingWorld:
    sw: SwapWorld
    mochi: MochiSim
    clock: Clock

    def state(self) -> dict[str, Any]:
        return self.sw.state()

    async def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        async with api_client(swap_routes, self.state()) as client:
            response = await client.post(path, json=body)
            return response.status_code, response.json()

    async def sign(self, icy: str, sats: str) -> tuple[int, dict[str, Any]]:
        body = {"icy_amount": icy, "btc_address": recipient(7), "btc_amount": sats}
        return await self.post("/api/v1/swap/generate-signature", body)

    async def get(self, routes: Any, path: str) -> tuple[int, dict[str, Any]]:
        async with api_client(routes, self.state()) as client:
            response = await client.get(path)
            return response.status_code, response.json()


def _oracle(sw: SwapWorld, clock: Callable[[], float]) -> OracleService:
    return OracleService(sw.settings, sw.btc.metrics, sw.engine, sw.clients, clock=clock)


@pytest.fixture
async def pw(swap_world: SwapWorld) -> PricingWorld:
    """The swap world with 30 % of circulating ICY on Mochi Pay: 70 000 ICY on chain (30 000 of the holder's
    100 000 sit in a locked treasury) + 30 000 on Mochi Pay = 100 000 ICY against 1 BTC (ratio 10^13)."""
    sw = swap_world
    sw.evm_sim.transfer(HOLDER, LOCKED, 30_000 * ICY)
    sw.evm_sim.mine_block()
    await seed_locked_treasuries(sw.engine, [LOCKED])
    mochi = MochiSim(30_000 * ICY)
    # A high breaker threshold: these tests are about the oracle, not about the Mochi Pay breaker.
    metrics = Metrics(make_registry())
    breakers = Breakers(make_settings(CB_MOCHI_PAY_THRESHOLD=1000), metrics)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=mochi.app))
    sw.btc.http.append(http)
    client = MochiPayClient(http, "http://mochi", breakers, metrics, deadline=1.0)
    sw.clients = dataclasses.replace(sw.clients, mochi=client)
    clock = Clock()
    sw.oracle = _oracle(sw, clock)
    return PricingWorld(sw, mochi, clock)


async def test_mochi_down_from_the_start_is_503_oracle_incomplete(pw: PricingWorld) -> None:
    pw.mochi.faults.set(Fault(path="*", status=500))
    # A fair pair is refused: no circulated-ICY figure with every addend known exists yet.
    status, body = await pw.sign(ICY_1000, FAIR_1000)
    assert (status, body["error"]) == (503, "oracle_incomplete"), body
    assert body.get("data") is None
    # The old rule's price (Mochi Pay counted as 0) is not signed either.
    assert (await pw.sign(ICY_1000, OLD_RULE_1000))[1]["error"] == "oracle_incomplete"
    # Swap requests: refused at the route...
    status, body = await pw.post(
        "/api/v1/swap", {"icy_amount": ICY_1000, "btc_address": recipient(7), "icy_tx": "0x" + "ab" * 32}
    )
    assert (status, body["error"]) == (503, "oracle_incomplete")
    with pytest.raises(OracleIncomplete):
        await pw.sw.oracle.pricing_ratio()
    # ... while the display routes keep the partial figure with a warning.
    status, body = await pw.get(info_routes, "/api/v1/swap/info")
    assert status == 200
    assert body["data"]["circulated_icy_balance"] == str(70_000 * ICY)
    assert body["data"]["partial_data"] is True
    assert any("mochi_pay" in w for w in body["data"]["warnings"])
    status, body = await pw.get(oracle_routes, "/api/v1/oracle/icy-btc-ratio")
    assert (status, body["data"]["value"]) == (200, str(7 * 10**12))


async def test_swap_request_conversion_waits_for_a_complete_figure(pw: PricingWorld) -> None:
    sw = pw.sw
    pw.mochi.faults.set(Fault(path="*", status=500))
    icy_tx = sw.evm_sim.transfer(HOLDER, SIGNER_ADDRESS, 1000 * ICY)
    sw.evm_sim.mine_block()
    sw.evm_sim.mine_block()  # BLOCKCHAIN_CONFIRMATIONS=1: the transfer is one block deep
    async with sw.engine.begin() as conn:
        await conn.execute(
            swap_requests.insert().values(icy_amount=1000 * ICY, btc_address=recipient(7), icy_tx=icy_tx)
        )
    keys = ("BLOCKCHAIN_BTC_TREASURY_ADDRESS", "BLOCKCHAIN_ICY_CONTRACT_ADDR", "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR")
    settings = make_settings(**{k: getattr(sw.settings, k) for k in keys}, BLOCKCHAIN_CONFIRMATIONS=1)
    await make_icy_indexer(sw.engine, sw.clients, settings, sw.btc.metrics)(JobContext("icy"))
    processor = SwapRequestProcessor(sw.engine, sw.clients.evm, sw.oracle, settings)
    report = await processor.run()
    assert report.deferred == {1: "oracle_incomplete"}
    assert [tx for tx in sw.evm_sim.txs.values() if tx.frm == SIGNER_ADDRESS.lower()] == []
    # Mochi Pay back: the request is converted at the complete ratio (1000 ICY = 1 000 000 sats).
    pw.mochi.faults.clear()
    pw.clock.now += 31  # the incomplete cached figure is retried after 30 s
    report = await processor.run()
    assert report.sent == [1]
    async with sw.engine.connect() as conn:
        row = (await conn.execute(swap_requests.select())).mappings().one()
    assert (row["status"], row["btc_amount"]) == ("sending", 1_000_000)


async def test_the_43_percent_example_and_the_last_good_figure_until_mochi_max_age(pw: PricingWorld) -> None:
    """SPEC §9: with 30 % of supply in Mochi Pay, the old rule priced 1000 ICY 43 % too high."""
    assert (int(OLD_RULE_1000) - int(FAIR_1000)) * 100 // int(FAIR_1000) == 42  # 42.857… %: "43 %"
    assert (await pw.sign(ICY_1000, FAIR_1000))[0] == 200  # a good read of Mochi Pay
    assert (await pw.sign(ICY_1000, OLD_RULE_1000))[1]["error"] == "amount_exceeds_value"

    pw.mochi.faults.set(Fault(path="*", status=500))
    pw.clock.now += 301  # the 5-minute cache expired: circulated ICY is recomputed without Mochi Pay
    # The display figure is partial (the old rule's ratio, with a warning)...
    status, body = await pw.get(info_routes, "/api/v1/swap/info")
    assert status == 200
    assert body["data"]["circulated_icy_balance"] == str(70_000 * ICY)
    assert any("mochi_pay" in w for w in body["data"]["warnings"])
    assert await pw.sw.oracle.icy_btc_ratio() == 7 * 10**12
    # ...but pricing stands in the last good Mochi Pay figure: still 100 000 ICY per BTC.
    assert await pw.sw.oracle.pricing_ratio() == 10**13
    assert (await pw.sign(ICY_1000, FAIR_1000))[0] == 200
    status, body = await pw.sign(ICY_1000, OLD_RULE_1000)
    assert (status, body["error"]) == (400, "amount_exceeds_value")  # the old rule signed this one

    pw.clock.now = 1000.0 + 3599  # just younger than MOCHI_MAX_AGE (1 h)
    assert (await pw.sign(ICY_1000, FAIR_1000))[0] == 200
    pw.clock.now = 1000.0 + 3600
    status, body = await pw.sign(ICY_1000, FAIR_1000)
    assert (status, body["error"]) == (503, "oracle_incomplete")
    assert (await pw.get(info_routes, "/api/v1/swap/info"))[0] == 200  # display is unaffected

    # Mochi Pay back: pricing resumes without waiting for the 5-minute cache.
    pw.mochi.faults.clear()
    pw.clock.now += 31
    assert (await pw.sign(ICY_1000, FAIR_1000))[0] == 200


async def _set_status(sw: SwapWorld, row_id: int, status: str) -> None:
    P = onchain_btc_processed_transactions
    async with sw.engine.begin() as conn:
        await conn.execute(update(P).where(P.c.id == row_id).values(status=status))


async def _payout(sw: SwapWorld, n: int, total: int, status: str) -> int:
    row_id = await add_payout(sw.engine, n, recipient(100 + n), total)
    await _set_status(sw, row_id, status)
    return row_id


async def test_a_payout_backlog_lowers_the_pricing_treasury(swap_world: SwapWorld) -> None:
    """1 BTC in the treasury, 0.5 BTC of it owed to payouts not in the mempool yet: ICY is priced against the
    other 0.5 BTC. A signature that the raw treasury would allow is refused."""
    sw = swap_world
    clock = Clock()
    sw.oracle = _oracle(sw, clock)
    await _payout(sw, 1, 20_000_000, "pending")
    await _payout(sw, 2, 20_000_000, "held")
    await _payout(sw, 3, 10_000_000, "broadcasting")
    await _payout(sw, 4, 30_000_000, "confirming")  # in the mempool: Esplora's figure already holds it
    await _payout(sw, 5, 5_000_000, "completed")
    await _payout(sw, 6, 7_000_000, "failed")
    async with api_client(swap_routes, sw.state()) as client:

        async def sign(sats: int) -> httpx.Response:
            body = {"icy_amount": str(100 * ICY), "btc_address": recipient(1), "btc_amount": str(sats)}
            return await client.post("/api/v1/swap/generate-signature", json=body)

        answer = await sign(100_000)  # fair at the raw treasury (100 000 ICY per BTC)
        assert (answer.status_code, answer.json()["error"]) == (400, "amount_exceeds_value")
        assert (await sign(50_000)).status_code == 200  # 100 ICY against the unowed 0.5 BTC
    pricing = await sw.oracle.pricing()
    assert (pricing.treasury, pricing.owed, pricing.ratio) == (50_000_000, 50_000_000, 2 * 10**13)
    assert await sw.oracle.treasury_btc() == 100_000_000  # the display figure is the raw treasury
    # A new payout counts at once (the owed totals are read from the database at every call).
    await _payout(sw, 7, 10_000_000, "pending")
    assert (await sw.oracle.pricing()).owed == 60_000_000
    # The backlog clears: pricing follows once the treasury is read again.
    for row_id in (1, 2, 3, 7):
        await _set_status(sw, row_id, "failed")
    clock.now += 301
    assert (await sw.oracle.pricing()).owed == 0


async def test_payouts_that_move_on_after_the_treasury_was_read_stay_subtracted(swap_world: SwapWorld) -> None:
    """The cached treasury was read while a payout was owed (its coins unspent): when that payout reaches the
    mempool within the cache's 5 minutes, the cached figure still holds its coins, so it stays subtracted; so
    does a payout created and sent after the read."""
    sw = swap_world
    clock = Clock()
    sw.oracle = _oracle(sw, clock)
    owed = await _payout(sw, 1, 20_000_000, "pending")
    assert (await sw.oracle.pricing()).treasury == 80_000_000  # the treasury is read (and cached) now
    await _set_status(sw, owed, "confirming")
    later = await _payout(sw, 2, 10_000_000, "pending")
    await _set_status(sw, later, "confirming")
    assert (await sw.oracle.pricing()).treasury == 70_000_000
    # Once the treasury is read again, Esplora's figure is the one that counts (here the simulator never saw
    # those payouts, so nothing is subtracted any more).
    clock.now += 301
    assert (await sw.oracle.pricing()).treasury == 100_000_000

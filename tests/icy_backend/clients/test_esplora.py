"""EsploraClient against the Esplora simulator: every call, its parsing, paging, broadcast, probe."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from icy_backend.breakers import Breakers
from icy_backend.clients.errors import BroadcastRejected, InvalidResponse, UpstreamHTTPStatus
from icy_backend.clients.esplora import AddressStats, EsploraClient, TxStatus
from icy_backend.metrics import Metrics
from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim
from icy_backend.sim.faults import Fault
from tests.icy_backend.clients.conftest import calls, duration_count

pytestmark = pytest.mark.anyio

WALLET = P2wpkhKey.from_seed(b"client wallet")
OTHER = P2wpkhKey.from_seed(b"client other")
API = "blockstream_api"


@pytest.fixture
def sim() -> EsploraSim:
    return EsploraSim()


@pytest.fixture
async def esplora(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> AsyncIterator[EsploraClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        yield EsploraClient(http, ["http://sim"], breakers, metrics, deadline=2.0)


async def test_address_stats_and_utxos(sim: EsploraSim, esplora: EsploraClient, metrics: Metrics) -> None:
    txid, vout = sim.fund(WALLET.address, 50_000)
    sim.fund(WALLET.address, 7_000, confirmed=False)
    stats = await esplora.address_stats(WALLET.address)
    assert stats == AddressStats(50_000, 0, 7_000, 0, chain_tx_count=1, mempool_tx_count=1)
    assert stats.confirmed_balance == 50_000
    assert stats.mempool_delta == 7_000
    utxos = await esplora.utxos(WALLET.address)
    confirmed = [u for u in utxos if u.confirmed]
    assert [(u.txid, u.vout, u.value, u.block_height) for u in confirmed] == [(txid, vout, 50_000, sim.height)]
    assert [(u.value, u.block_height) for u in utxos if not u.confirmed] == [(7_000, None)]
    assert all(isinstance(u.value, int) for u in utxos)
    assert calls(metrics, API, "success") == 2
    assert duration_count(metrics, API, "address_stats", "success") == 1
    assert duration_count(metrics, API, "utxos", "success") == 1


async def test_paging_across_three_pages(sim: EsploraSim, esplora: EsploraClient) -> None:
    funded = [sim.fund(WALLET.address, 1_000 + n)[0] for n in range(60)]
    seen: list[str] = []
    page = await esplora.address_txs(WALLET.address)
    pages = 0
    while page:
        pages += 1
        seen.extend(tx.txid for tx in page)
        page = await esplora.address_txs(WALLET.address, last_seen_txid=page[-1].txid)
    assert pages == 3  # 25 + 25 + 10
    assert seen == list(reversed(funded))  # newest first, nothing skipped or repeated
    first = (await esplora.address_txs(WALLET.address))[0]
    assert first.status.confirmed
    assert first.vout[0].address == WALLET.address
    assert first.vout[0].value == 1_059
    assert first.vin[0].prevout is not None
    assert first.vin[0].prevout.value == 1_559


async def test_tx_status_outspend_tip_fees(sim: EsploraSim, esplora: EsploraClient) -> None:
    txid, vout = sim.fund(WALLET.address, 100_000)
    status = await esplora.tx_status(txid)
    assert status == TxStatus(True, sim.height, sim.blocks[-1].hash, sim.blocks[-1].time)
    assert await esplora.tx_status("00" * 32) is None
    assert (await esplora.outspend(txid, vout)).spent is False
    assert await esplora.tip_height() == sim.height
    sim.set_fee_estimates({"1": 20.5, "6": 3.25, "144": 1})
    fees = await esplora.fee_estimates()
    assert fees["6"] == 3.25
    assert fees["144"] == 1.0


async def test_broadcast_and_spend(sim: EsploraSim, esplora: EsploraClient) -> None:
    txid, vout = sim.fund(WALLET.address, 100_000)
    raw = WALLET.sign_spend([(txid, vout, 100_000)], [(OTHER.address, 60_000), (WALLET.address, 39_000)])
    new_txid = await esplora.broadcast(raw)
    assert {"txid": new_txid, "address": OTHER.address, "value": 60_000, "status": "mempool"} in sim.payments()
    spend = await esplora.outspend(txid, vout)
    assert spend.spent
    assert spend.txid == new_txid
    status = await esplora.tx_status(new_txid)
    assert status is not None
    assert not status.confirmed


async def test_broadcast_rejected_is_typed_and_not_a_breaker_failure(
    sim: EsploraSim, esplora: EsploraClient, breakers: Breakers, metrics: Metrics
) -> None:
    txid, vout = sim.fund(WALLET.address, 10_000)
    too_much = WALLET.sign_spend([(txid, vout, 10_000)], [(OTHER.address, 10_001)])
    for _ in range(5):
        with pytest.raises(BroadcastRejected) as info:
            await esplora.broadcast(too_much)
    assert info.value.error_class == "broadcast_rejected"
    assert info.value.reason
    assert breakers.state(API) == "closed"
    assert sim.payments() == []
    assert calls(metrics, API, "error") == 5


async def test_broadcast_is_never_retried(sim: EsploraSim, breakers: Breakers, metrics: Metrics) -> None:
    sim.faults.set(Fault(path="/tx", status=503))
    posts = 0

    async def counting(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal posts
        if scope["type"] == "http" and scope["method"] == "POST":
            posts += 1
        await sim.app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=counting)) as http:
        esplora = EsploraClient(http, ["http://a", "http://b"], breakers, metrics, deadline=2.0)
        with pytest.raises(UpstreamHTTPStatus):
            await esplora.broadcast("00")
    assert posts == 1  # neither retried nor failed over: the first node may have relayed it


async def test_malformed_body_is_invalid_response(sim: EsploraSim, esplora: EsploraClient) -> None:
    sim.faults.set(Fault(path="/fee-estimates", malformed=True))
    with pytest.raises(InvalidResponse):
        await esplora.fee_estimates()


async def test_probe_is_outside_breaker_and_metrics(
    sim: EsploraSim, esplora: EsploraClient, breakers: Breakers, metrics: Metrics
) -> None:
    assert await esplora.probe() == sim.height
    sim.faults.set(Fault(path="*", status=503))
    for _ in range(5):
        with pytest.raises(UpstreamHTTPStatus):
            await esplora.probe()
    assert breakers.state(API) == "closed"
    for status in ("success", "error", "timeout", "rejected"):
        assert calls(metrics, API, status) == 0

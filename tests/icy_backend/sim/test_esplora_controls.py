"""Esplora simulator controls (SPEC §11): fees, evict, mine, reorg, spend, payments, lag; and what reads show."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim

pytestmark = pytest.mark.anyio

WALLET = P2wpkhKey.from_seed(b"controls wallet")
USER = P2wpkhKey.from_seed(b"controls user")
RBF = 0xFFFFFFFD


@pytest.fixture
def sim() -> EsploraSim:
    return EsploraSim()


@pytest.fixture
async def client(sim: EsploraSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as c:
        yield c


def pay(coin: tuple[str, int], value: int, amount: int, fee: int) -> str:
    outputs = [(USER.address, amount), (WALLET.address, value - amount - fee)]
    return WALLET.sign_spend([(coin[0], coin[1], value)], outputs, sequence=RBF)


async def send(client: httpx.AsyncClient, raw: str) -> str:
    r = await client.post("/tx", content=raw)
    assert r.status_code == 200, r.text
    return r.text


async def payments(client: httpx.AsyncClient) -> dict[str, dict[str, object]]:
    r = await client.get("/_sim/payments")
    assert r.status_code == 200
    return {p["txid"]: p for p in r.json()}


async def wallet_history(client: httpx.AsyncClient) -> list[str]:
    return [t["txid"] for t in (await client.get(f"/address/{WALLET.address}/txs")).json()]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/_sim/fees", {"mempool_min": 2.0, "min_relay": 1.0}),
        ("PUT", "/_sim/fees", {"estimates": {"6": "fast"}}),
        ("POST", "/_sim/evict", {"txid": "00" * 32, "force": True}),
        ("POST", "/_sim/mine", {"blocks": 1, "min_fee": 3}),
        ("POST", "/_sim/mine", {"blocks": True}),
        ("POST", "/_sim/reorg", {"depth": 1, "reinclude": True}),
        ("POST", "/_sim/reorg", {}),
        ("POST", "/_sim/spend", {"outpoint": "ab:0", "confirmations": 6}),
        ("POST", "/_sim/spend", {"outpoint": "no-colon"}),
        ("POST", "/_sim/mine", [1]),
    ],
)
async def test_unknown_key_or_bad_value_is_400(
    sim: EsploraSim, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    tip = sim.height
    r = await client.request(method, path, json=body)
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert sim.height == tip
    assert sim.mempool_min == 1.0


async def test_every_control_answers_200_with_state(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    r = await client.put("/_sim/fees", json={"estimates": {"1": 30.0, "6": 12.5}, "mempool_min": 1.5})
    assert r.status_code == 200
    assert r.json()["estimates"] == {"1": 30.0, "6": 12.5}
    assert r.json()["mempool_min"] == 1.5
    assert (await client.get("/fee-estimates")).json() == {"1": 30.0, "6": 12.5}
    txid = await send(client, pay(coin, 100_000, 50_000, 2_000))
    assert (await client.get("/_sim/state")).json()["mempool"] == [txid]
    r = await client.post("/_sim/mine")  # no body: one block, every fee rate
    assert r.status_code == 200
    assert r.json()["mined"] == [txid]
    assert r.json()["height"] == sim.height
    assert r.json()["mempool"] == []
    r = await client.post("/_sim/mine", json={"blocks": 3})
    assert r.json()["height"] == sim.height
    assert len(r.json()["hashes"]) == 3
    assert (await payments(client))[txid]["confirmations"] == 4


async def test_eviction_and_rebroadcast_once_in_history(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    raw = pay(coin, 100_000, 50_000, 1_000)
    txid = await send(client, raw)
    r = await client.post("/_sim/evict", json={"txid": txid})
    assert r.status_code == 200
    assert r.json()["evicted"] == [txid]
    assert (await payments(client))[txid]["status"] == "evicted"
    # The node forgot it: unknown, coin unspent again, not in history, balance back.
    assert (await client.get(f"/tx/{txid}/status")).status_code == 404
    assert (await client.get(f"/tx/{coin[0]}/outspend/{coin[1]}")).json() == {"spent": False}
    assert [u["txid"] for u in (await client.get(f"/address/{WALLET.address}/utxo")).json()] == [coin[0]]
    assert txid not in await wallet_history(client)
    assert (await client.get(f"/address/{WALLET.address}")).json()["mempool_stats"]["tx_count"] == 0
    assert (await client.post("/_sim/evict", json={"txid": txid})).status_code == 400
    # The same bytes again: accepted, listed once everywhere.
    assert await send(client, raw) == txid
    assert (await wallet_history(client)).count(txid) == 1
    assert [p["status"] for p in (await payments(client)).values()] == ["mempool"]
    assert sim.accepted == [txid]
    sim.mine()
    history = [t["txid"] for t in (await client.get(f"/address/{WALLET.address}/txs/chain")).json()]
    assert history.count(txid) == 1
    assert (await payments(client))[txid]["status"] == "confirmed"


async def test_raising_mempool_min_evicts_cheaper(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    cheap_coin, rich_coin = sim.fund(WALLET.address, 100_000), sim.fund(WALLET.address, 100_000)
    cheap = await send(client, pay(cheap_coin, 100_000, 50_000, 300))  # ~2 sat/vB
    rich = await send(client, pay(rich_coin, 100_000, 50_000, 3_000))  # ~21 sat/vB
    r = await client.put("/_sim/fees", json={"mempool_min": 10})
    assert r.json()["evicted"] == [cheap]
    assert r.json()["mempool"] == [rich]
    statuses = {t: p["status"] for t, p in (await payments(client)).items()}
    assert statuses == {cheap: "evicted", rich: "mempool"}
    # Fees fall again: the same bytes are welcome.
    await client.put("/_sim/fees", json={"mempool_min": 1})
    assert await send(client, pay(cheap_coin, 100_000, 50_000, 300)) == cheap


async def test_fee_market_mining(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    cheap_coin, rich_coin = sim.fund(WALLET.address, 100_000), sim.fund(WALLET.address, 100_000)
    cheap = await send(client, pay(cheap_coin, 100_000, 50_000, 300))
    rich = await send(client, pay(rich_coin, 100_000, 50_000, 3_000))
    # A child of the cheap one pays a lot, but cannot be mined without its parent.
    child = await send(client, WALLET.sign_spend([(cheap, 1, 49_700)], [(USER.address, 40_000)], sequence=RBF))
    r = await client.post("/_sim/mine", json={"blocks": 2, "min_fee_rate": 10})
    assert r.json()["mined"] == [rich]
    assert r.json()["mempool"] == [cheap, child]
    statuses = {t: p["status"] for t, p in (await payments(client)).items()}
    assert statuses == {cheap: "mempool", rich: "confirmed", child: "mempool"}
    assert (await client.get(f"/tx/{cheap}/status")).json() == {"confirmed": False}
    r = await client.post("/_sim/mine", json={"min_fee_rate": 0})
    assert r.json()["mined"] == [cheap, child]


async def test_reorg_returns_to_mempool_and_remined_heights_get_new_hashes(
    sim: EsploraSim, client: httpx.AsyncClient
) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    txid = await send(client, pay(coin, 100_000, 50_000, 1_000))
    first = (await client.post("/_sim/mine", json={"blocks": 2})).json()
    tx_block = first["hashes"][0]
    assert (await client.get(f"/tx/{txid}/status")).json()["block_hash"] == tx_block
    r = await client.post("/_sim/reorg", json={"depth": 2})
    assert r.status_code == 200
    assert r.json()["disconnected"] == first["hashes"]
    assert r.json()["returned"] == [txid]
    assert r.json()["height"] == first["height"] - 2
    assert (await payments(client))[txid]["status"] == "mempool"
    assert (await client.get(f"/tx/{txid}/status")).json() == {"confirmed": False}
    assert (await client.get("/blocks/tip/height")).text == str(first["height"] - 2)
    # Same heights mined again within the same second (fixed clock): new hashes.
    again = (await client.post("/_sim/mine", json={"blocks": 2})).json()
    assert again["height"] == first["height"]
    assert set(again["hashes"]).isdisjoint(first["hashes"])
    status = (await client.get(f"/tx/{txid}/status")).json()
    assert status["block_hash"] == again["hashes"][0]
    assert (await payments(client))[txid] == {
        "txid": txid,
        "address": USER.address,
        "value": 50_000,
        "status": "confirmed",
        "confirmations": 2,
    }
    assert (await wallet_history(client)).count(txid) == 1


async def test_remined_height_hash_unique_with_a_frozen_clock() -> None:
    sim = EsploraSim(clock=lambda: 1_700_000_000.0)
    sim.mine()
    hashes = {sim.blocks[-1].hash}
    for _ in range(5):
        sim.reorg(1)
        sim.mine()
        hashes.add(sim.blocks[-1].hash)
    assert len(hashes) == 6


async def test_reorg_drop_forgets_the_transactions(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    txid = await send(client, pay(coin, 100_000, 50_000, 1_000))
    sim.mine()
    child = await send(client, WALLET.sign_spend([(txid, 1, 49_000)], [(USER.address, 40_000)], sequence=RBF))
    r = await client.post("/_sim/reorg", json={"depth": 1, "drop": True})
    assert r.status_code == 200
    assert r.json()["dropped"] == [txid, child]
    assert r.json()["mempool"] == []
    statuses = {t: p["status"] for t, p in (await payments(client)).items()}
    assert statuses == {txid: "evicted", child: "evicted"}
    assert (await client.get(f"/tx/{txid}/status")).status_code == 404
    assert [u["txid"] for u in (await client.get(f"/address/{WALLET.address}/utxo")).json()] == [coin[0]]
    assert (await client.post("/_sim/reorg", json={"depth": 10_000})).status_code == 400


async def test_foreign_spend_conflicts_the_mempool_tx(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    coin = sim.fund(WALLET.address, 100_000)
    other = sim.fund(WALLET.address, 30_000)
    txid = await send(client, pay(coin, 100_000, 50_000, 1_000))
    r = await client.post("/_sim/spend", json={"outpoint": f"{coin[0]}:{coin[1]}", "confirm": True})
    assert r.status_code == 200
    foreign = r.json()["txid"]
    assert r.json()["conflicted"] == [txid]
    assert r.json()["mempool"] == []
    assert (await payments(client))[txid]["status"] == "conflicted"
    out = (await client.get(f"/tx/{coin[0]}/outspend/{coin[1]}")).json()
    assert out["txid"] == foreign
    assert out["status"]["confirmed"] is True
    assert (await client.get(f"/tx/{txid}/status")).status_code == 404
    refused = await client.post("/tx", content=pay(coin, 100_000, 50_000, 5_000))
    assert "bad-txns-inputs-missingorspent" in refused.text
    # Unconfirmed foreign spend: sits in the mempool; spending a confirmed-spent coin is refused.
    r = await client.post("/_sim/spend", json={"outpoint": f"{other[0]}:{other[1]}", "confirm": False})
    assert r.json()["mempool"] == [r.json()["txid"]]
    again = await client.post("/_sim/spend", json={"outpoint": f"{coin[0]}:{coin[1]}"})
    assert again.status_code == 400
    assert foreign not in await payments(client)


async def test_lagging_view(sim: EsploraSim) -> None:
    view = sim.lagging_view()
    coin = sim.fund(WALLET.address, 100_000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=view.app), base_url="http://sim2") as c2:
        txid = await send(c2, pay(coin, 100_000, 50_000, 1_000))  # broadcasts reach the shared node
        sim.mine(3)
        r = await c2.put("/_sim/lag", json={"blocks": 3})
        assert r.status_code == 200
        assert r.json()["view_height"] == sim.height - 3
        assert (await c2.get("/blocks/tip/height")).text == str(sim.height - 3)
        assert (await c2.get("/blocks/tip/hash")).text == sim.blocks[-4].hash
        assert (await c2.get(f"/tx/{txid}/status")).json() == {"confirmed": False}
        assert (await c2.put("/_sim/lag", json={"blocks": 1, "x": 1})).status_code == 400
        await c2.put("/_sim/lag", json={"blocks": 0})
        assert (await c2.get(f"/tx/{txid}/status")).json()["confirmed"] is True


async def test_confirmed_foreign_spend_of_an_unconfirmed_coin_mines_its_parent(sim: EsploraSim) -> None:
    coin = sim.fund(WALLET.address, 100_000, confirmed=False)
    foreign, _ = sim.spend(coin[0], coin[1], confirm=True)
    assert sim.blocks[-1].txids == [coin[0], foreign]
    assert sim.mempool == []
    assert sim.confirmations(coin[0]) == sim.confirmations(foreign) == 1


async def test_lagging_view_reads_are_those_of_its_own_tip(sim: EsploraSim) -> None:
    view = sim.lagging_view()
    coin = sim.fund(WALLET.address, 100_000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=view.app), base_url="http://sim2") as c2:
        txid = await send(c2, pay(coin, 100_000, 50_000, 1_000))
        sim.mine()
        view.lag = 1
        stats = (await c2.get(f"/address/{WALLET.address}")).json()
        assert stats["chain_stats"]["funded_txo_sum"] == 100_000
        assert stats["chain_stats"]["spent_txo_sum"] == 0
        assert stats["mempool_stats"]["spent_txo_sum"] == 100_000  # mined after its tip: still "mempool" there
        chain = [t["txid"] for t in (await c2.get(f"/address/{WALLET.address}/txs/chain")).json()]
        assert chain == [coin[0]]
        out = (await c2.get(f"/tx/{coin[0]}/outspend/{coin[1]}")).json()
        assert out["txid"] == txid
        assert out["status"] == {"confirmed": False}
        utxos = (await c2.get(f"/address/{WALLET.address}/utxo")).json()
        assert [(u["txid"], u["status"]["confirmed"]) for u in utxos] == [(txid, False)]
        # The up-to-date view of the same chain meanwhile sees the block.
        assert sim.address_json(WALLET.address)["chain_stats"]["spent_txo_sum"] == 100_000

"""Esplora simulator: wire shapes, paging, broadcast validation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.esplora import EsploraSim

pytestmark = pytest.mark.anyio

WALLET = P2wpkhKey.from_seed(b"test wallet")
OTHER = P2wpkhKey.from_seed(b"other wallet")


@pytest.fixture
def sim() -> EsploraSim:
    return EsploraSim()


@pytest.fixture
async def client(sim: EsploraSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as c:
        yield c


async def test_address_and_utxo_shapes(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    txid, vout = sim.fund(WALLET.address, 50_000)
    sim.fund(WALLET.address, 7_000, confirmed=False)
    r = await client.get(f"/address/{WALLET.address}")
    assert r.status_code == 200
    body = r.json()
    assert body["chain_stats"] == {
        "funded_txo_count": 1,
        "funded_txo_sum": 50_000,
        "spent_txo_count": 0,
        "spent_txo_sum": 0,
        "tx_count": 1,
    }
    assert body["mempool_stats"]["funded_txo_sum"] == 7_000
    utxos = (await client.get(f"/address/{WALLET.address}/utxo")).json()
    confirmed = [u for u in utxos if u["status"]["confirmed"]]
    assert confirmed == [
        {
            "txid": txid,
            "vout": vout,
            "status": {
                "confirmed": True,
                "block_height": sim.height,
                "block_hash": sim.blocks[-1].hash,
                "block_time": sim.blocks[-1].time,
            },
            "value": 50_000,
        }
    ]
    assert [u["status"] for u in utxos if not u["status"]["confirmed"]] == [{"confirmed": False}]
    tx = (await client.get(f"/tx/{txid}")).json()
    assert tx["vout"][0]["scriptpubkey_address"] == WALLET.address
    assert tx["vout"][0]["scriptpubkey_type"] == "v0_p2wpkh"
    assert tx["vin"][0]["prevout"]["value"] == 50_500
    assert tx["fee"] == 500
    assert (await client.get(f"/tx/{txid}/hex")).text == sim.txs[txid].raw.hex()
    tip = await client.get("/blocks/tip/height")
    assert tip.text == str(sim.height)
    assert tip.headers["content-type"].startswith("text/plain")
    assert (await client.get("/address/not-an-address")).status_code == 400
    assert (await client.get("/tx/" + "00" * 32 + "/status")).status_code == 404


async def test_history_paging_three_pages(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    funded = [sim.fund(WALLET.address, 1000 + n)[0] for n in range(62)]
    sim.fund(WALLET.address, 999, confirmed=False)
    newest_first = list(reversed(funded))
    first = (await client.get(f"/address/{WALLET.address}/txs")).json()
    assert not first[0]["status"]["confirmed"]
    page1 = [t["txid"] for t in first if t["status"]["confirmed"]]
    assert page1 == newest_first[:25]
    page2 = [t["txid"] for t in (await client.get(f"/address/{WALLET.address}/txs/chain/{page1[-1]}")).json()]
    assert page2 == newest_first[25:50]
    page3 = [t["txid"] for t in (await client.get(f"/address/{WALLET.address}/txs/chain/{page2[-1]}")).json()]
    assert page3 == newest_first[50:]
    end = (await client.get(f"/address/{WALLET.address}/txs/chain/{page3[-1]}")).json()
    assert end == []


async def test_broadcast_spends_input_and_is_listed(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    txid, vout = sim.fund(WALLET.address, 100_000)
    raw = WALLET.sign_spend([(txid, vout, 100_000)], [(OTHER.address, 60_000), (WALLET.address, 39_000)])
    r = await client.post("/tx", content=raw, headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    new_txid = r.text
    assert sim.tx_known(new_txid)
    assert (await client.get(f"/tx/{new_txid}/status")).json() == {"confirmed": False}
    out = (await client.get(f"/tx/{txid}/outspend/{vout}")).json()
    assert out == {"spent": True, "txid": new_txid, "vin": 0, "status": {"confirmed": False}}
    payments = (await client.get("/_sim/payments")).json()
    # Change back to the wallet is not a payment.
    assert payments == [{"txid": new_txid, "address": OTHER.address, "value": 60_000, "status": "mempool"}]
    # The mempool spend hides the funded UTXO; the mempool change output shows up unconfirmed.
    utxos = (await client.get(f"/address/{WALLET.address}/utxo")).json()
    assert [(u["txid"], u["value"], u["status"]["confirmed"]) for u in utxos] == [(new_txid, 39_000, False)]
    stats = (await client.get(f"/address/{WALLET.address}")).json()
    assert stats["mempool_stats"]["spent_txo_sum"] == 100_000
    # Re-broadcasting the same bytes is harmless: the node already knows them.
    again = await client.post("/tx", content=raw)
    assert again.status_code == 400
    assert again.text == 'sendrawtransaction RPC error: {"code":-26,"message":"txn-already-known"}'
    assert len(sim.payments()) == 1
    mined = await client.post("/_sim/mine")
    assert mined.json()["height"] == sim.height
    status = (await client.get(f"/tx/{new_txid}/status")).json()
    assert status["confirmed"] is True
    assert status["block_height"] == sim.height


async def test_double_spend_rejected(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    txid, vout = sim.fund(WALLET.address, 100_000)
    first = WALLET.sign_spend([(txid, vout, 100_000)], [(OTHER.address, 90_000)])
    assert (await client.post("/tx", content=first)).status_code == 200
    second = WALLET.sign_spend([(txid, vout, 100_000)], [(OTHER.address, 80_000)])
    r = await client.post("/tx", content=second)
    assert r.status_code == 400
    assert r.text.startswith("sendrawtransaction RPC error:")
    assert "txn-mempool-conflict" in r.text
    sim.mine()
    r = await client.post("/tx", content=second)
    assert r.status_code == 400
    assert "bad-txns-inputs-missingorspent" in r.text


async def test_rejections(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    txid, vout = sim.fund(WALLET.address, 10_000)
    too_much = WALLET.sign_spend([(txid, vout, 10_000)], [(OTHER.address, 10_001)])
    r = await client.post("/tx", content=too_much)
    assert r.status_code == 400
    assert "bad-txns-in-belowout" in r.text
    unknown = WALLET.sign_spend([("ab" * 32, 0, 10_000)], [(OTHER.address, 5_000)])
    assert "bad-txns-inputs-missingorspent" in (await client.post("/tx", content=unknown)).text
    assert "TX decode failed" in (await client.post("/tx", content="zz-not-hex")).text
    dust = WALLET.sign_spend([(txid, vout, 10_000)], [(OTHER.address, 5_000), (WALLET.address, 100)])
    assert '"message":"dust"' in (await client.post("/tx", content=dust)).text
    wrong_key = OTHER.sign_spend([(txid, vout, 10_000)], [(OTHER.address, 5_000)])
    assert "mandatory-script-verify-flag-failed" in (await client.post("/tx", content=wrong_key)).text
    wrong_value = WALLET.sign_spend([(txid, vout, 20_000)], [(OTHER.address, 5_000)])
    assert (await client.post("/tx", content=wrong_value)).status_code == 400
    no_fee = WALLET.sign_spend([(txid, vout, 10_000)], [(OTHER.address, 10_000)])
    assert "min relay fee not met" in (await client.post("/tx", content=no_fee)).text
    assert sim.payments() == []
    assert (await client.get(f"/tx/{txid}/outspend/{vout}")).json() == {"spent": False}


async def test_spend_inputs_elsewhere(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    txid, vout = sim.fund(WALLET.address, 100_000)
    raw = WALLET.sign_spend([(txid, vout, 100_000)], [(OTHER.address, 90_000)])
    accepted = (await client.post("/tx", content=raw)).text
    conflict = sim.spend_inputs_elsewhere(accepted)
    assert not sim.tx_known(accepted)
    assert (await client.get(f"/tx/{accepted}/status")).status_code == 404
    out = (await client.get(f"/tx/{txid}/outspend/{vout}")).json()
    assert out["spent"] is True
    assert out["txid"] == conflict
    assert out["status"]["confirmed"] is True
    assert [p["status"] for p in sim.payments()] == ["conflicted"]
    r = await client.post("/tx", content=raw)
    assert r.status_code == 400


async def test_spend_inputs_elsewhere_of_unbroadcast_raw_tx(sim: EsploraSim) -> None:
    txid, vout = sim.fund(WALLET.address, 100_000)
    raw = WALLET.sign_spend([(txid, vout, 100_000)], [(OTHER.address, 90_000)])
    conflict = sim.spend_inputs_elsewhere(raw)
    assert sim.outspends[(txid, vout)][0] == conflict
    with pytest.raises(Exception, match="missingorspent"):
        sim.broadcast(raw)


async def test_fee_estimates_settable(sim: EsploraSim, client: httpx.AsyncClient) -> None:
    fees = (await client.get("/fee-estimates")).json()
    assert isinstance(fees["6"], float)
    sim.set_fee_estimates({"1": 50.5, "6": 12.25})
    assert (await client.get("/fee-estimates")).json() == {"1": 50.5, "6": 12.25}

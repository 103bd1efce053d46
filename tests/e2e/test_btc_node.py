"""``icy-backend simulate --btc-block-time 0`` as a subprocess: tests decide when Bitcoin blocks are mined, the
controls answer over HTTP, and what the node accepts is recorded for the session's independent re-verification."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import httpx
import pytest

from icy_backend.sim.btc_wallet import P2wpkhKey
from icy_backend.sim.combined import DEMO_BTC_SEED
from icy_backend.sim.esplora_chain import RECORD_ENV
from tests.e2e.stack import simulator

pytestmark = pytest.mark.anyio


async def test_bitcoin_blocks_only_on_request(tmp_path: Path) -> None:
    wallet = P2wpkhKey.from_seed(DEMO_BTC_SEED, "test")
    user = P2wpkhKey.from_seed(b"e2e btc node user")
    with simulator(tmp_path, block_time=0.1, btc_block_time=0) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
            tip = int((await client.get("/esplora/blocks/tip/height")).text)
            evm = int(
                (await client.post("/evm", json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})).json()[
                    "result"
                ],
                16,
            )
            coin = (await client.get(f"/esplora/address/{wallet.address}/utxo")).json()[0]
            raw = wallet.sign_spend(
                [(coin["txid"], coin["vout"], coin["value"])],
                [(user.address, 60_000), (wallet.address, coin["value"] - 62_000)],
                sequence=0xFFFFFFFD,
            )
            txid = (await client.post("/esplora/tx", content=raw)).text
            await anyio.sleep(1.0)
            assert int((await client.get("/esplora/blocks/tip/height")).text) == tip
            evm_now = (await client.post("/evm", json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})).json()
            assert int(evm_now["result"], 16) > evm  # the EVM chain keeps ticking
            assert (await client.get(f"/esplora/tx/{txid}/status")).json() == {"confirmed": False}
            mined = (await client.post("/esplora/_sim/mine", json={"blocks": 1})).json()
            assert mined["height"] == tip + 1
            assert mined["mined"] == [txid]
            payments = (await client.get("/esplora/_sim/payments")).json()
            assert payments == [
                {"txid": txid, "address": user.address, "value": 60_000, "status": "confirmed", "confirmations": 1}
            ]
    record = os.environ.get(RECORD_ENV)
    assert record, "the session sets the record file (tests/conftest.py)"
    recorded = [json.loads(line)["raw"] for line in Path(record).read_text().splitlines()]
    assert raw in recorded  # the subprocess recorded it: the session re-verifies it at the end

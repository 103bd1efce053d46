"""``POST /api/v1/swap/generate-signature`` and ``POST /api/v1/swap`` against the simulators and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select

from icy_backend.db.tables import swap_requests
from icy_backend.domain.signature import SwapSigner
from icy_backend.routes.swap import routes
from tests.icy_backend.money.conftest import SIGNER_ADDRESS, SIGNER_KEY, SwapWorld, api_client, recipient

pytestmark = pytest.mark.anyio

# Ratio in the swap world: 100 000 ICY per BTC, so 100 ICY (10^20 wei) is worth exactly 100 000 sats.
ICY_100 = str(100 * 10**18)


async def _post(sw: SwapWorld, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with api_client(routes, sw.state()) as client:
        response = await client.post(path, json=body)
        return response.status_code, response.json()


def _metric(sw: SwapWorld, operation: str, status: str) -> float:
    value = sw.btc.metrics.registry.get_sample_value(
        "icy_backend_swap_operations_total", {"operation": operation, "status": status}
    )
    return value or 0.0


async def sign(sw: SwapWorld, icy: str, address: str, sats: str) -> tuple[int, dict[str, Any]]:
    return await _post(
        sw, "/api/v1/swap/generate-signature", {"icy_amount": icy, "btc_address": address, "btc_amount": sats}
    )


async def test_signature_for_a_fair_pair(swap_world: SwapWorld) -> None:
    assert await swap_world.oracle.icy_btc_ratio() == 10**13
    address = recipient(1)
    status, body = await sign(swap_world, ICY_100, address, "100000")
    assert status == 200, body
    data = body["data"]
    assert body["message"] == "signature generated successfully"
    assert (data["icy_amount"], data["btc_amount"]) == (ICY_100, "100000")
    assert len(data["signature"]) == 130
    signer = SwapSigner(SIGNER_KEY, 84532, swap_world.evm_sim.swap_address)
    digest = signer.digest(10**20, address, 100_000, int(data["nonce"]), int(data["deadline"]))
    assert Account._recover_hash(digest, signature=bytes.fromhex(data["signature"])) == SIGNER_ADDRESS
    assert _metric(swap_world, "signature", "success") == 1
    # 1 % tolerance: 101 000 sats is still fine.
    assert (await sign(swap_world, ICY_100, address, "101000"))[0] == 200
    # No approve (or any) transaction was sent from the signer wallet (fix).
    assert swap_world.evm_sim.nonces.get(SIGNER_ADDRESS.lower(), 0) == 0
    assert all(tx.frm.lower() != SIGNER_ADDRESS.lower() for tx in swap_world.evm_sim.txs.values())


@pytest.mark.parametrize(
    ("icy", "address", "sats", "field", "error"),
    [
        ("1e20", "r1", "100000", "icy_amount", "invalid_amount"),
        ("0", "r1", "100000", "icy_amount", "invalid_amount"),
        (ICY_100, "r1", "-5", "btc_amount", "invalid_amount"),
        (ICY_100, "r1", "1000.5", "btc_amount", "invalid_amount"),
        (ICY_100, "mainnet", "100000", "btc_address", "invalid_address"),
        (ICY_100, "garbage", "100000", "btc_address", "invalid_address"),
        (ICY_100, "r1", "293", "btc_amount", "amount_is_dust"),
        (ICY_100, "r1", "3200", "btc_amount", "amount_below_fee"),  # 3200 - 3000 fee < 294
        (ICY_100, "r1", "101001", "btc_amount", "amount_exceeds_value"),  # mispriced (fix)
        (str(10**18), "r1", "100000", "btc_amount", "amount_exceeds_value"),  # 1 ICY for 0.001 BTC
    ],
)
async def test_refusals(swap_world: SwapWorld, icy: str, address: str, sats: str, field: str, error: str) -> None:
    text = {"r1": recipient(1), "mainnet": recipient(1, "main"), "garbage": "tb1qnotanaddress"}[address]
    status, body = await sign(swap_world, icy, text, sats)
    assert status == 400, body
    assert body["error"] == error
    assert body["errors"][0]["field"] == field
    assert body["message"]
    assert body["data"] is None
    assert _metric(swap_world, "signature", "rejected") == 1


async def test_wrong_types_are_400_with_errors(swap_world: SwapWorld) -> None:
    status, body = await sign(swap_world, 10**20, recipient(1), 100000)  # type: ignore[arg-type]
    assert status == 400
    assert {e["field"] for e in body["errors"]} == {"icy_amount", "btc_amount"}


async def test_chain_id_mismatch_is_503(swap_world: SwapWorld) -> None:
    swap_world.evm_sim.set_chain_id(8453)
    status, body = await sign(swap_world, ICY_100, recipient(1), "100000")
    assert status == 503
    assert body["error"] == "chain_id_mismatch"
    assert "signature" not in str(body.get("data"))
    swap_world.evm_sim.set_chain_id(84532)
    assert (await sign(swap_world, ICY_100, recipient(1), "100000"))[0] == 200


async def test_swap_request_created_once(swap_world: SwapWorld) -> None:
    tx = "0x" + "ab" * 32
    body = {"icy_amount": str(2 * 10**20), "btc_address": recipient(2), "icy_tx": tx}
    status, answer = await _post(swap_world, "/api/v1/swap", body)
    assert (status, answer["data"]) == (200, "success"), answer
    status, answer = await _post(swap_world, "/api/v1/swap", body)
    assert status == 409
    assert answer["errors"][0]["field"] == "icy_tx"
    async with swap_world.engine.connect() as conn:
        rows = (await conn.execute(select(swap_requests))).mappings().all()
    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["icy_amount"], rows[0]["icy_tx"]) == ("pending", 2 * 10**20, tx)


@pytest.mark.parametrize(
    ("icy", "tx", "field", "error"),
    [
        (str(2 * 10**18 - 1), "0x" + "ab" * 32, "icy_amount", "amount_below_minimum"),
        (str(10**20), "ab" * 32, "icy_tx", "invalid_tx_hash"),
        (str(10**20), "0x" + "ab" * 31, "icy_tx", "invalid_tx_hash"),
        (str(3 * 10**18), "0x" + "ab" * 32, "icy_amount", "amount_below_fee"),  # 3 ICY = 3000 sats
    ],
)
async def test_swap_request_refusals(swap_world: SwapWorld, icy: str, tx: str, field: str, error: str) -> None:
    status, body = await _post(
        swap_world, "/api/v1/swap", {"icy_amount": icy, "btc_address": recipient(2), "icy_tx": tx}
    )
    assert status == 400, body
    assert (body["error"], body["errors"][0]["field"]) == (error, field)

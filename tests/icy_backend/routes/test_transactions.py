"""``GET /api/v1/transactions`` against real PostgreSQL: filters, paging, total, row shape, 400s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.routes.transactions import routes
from tests.icy_backend.domain.support import client_for, make_app

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

ALICE = "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
BOB = "0x1111111111111111111111111111111111111111"
BECH = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
BASE58 = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _hash(i: int) -> str:
    return "0x" + f"{i:064x}"


async def _seed(engine: AsyncEngine) -> None:
    """Six payouts: 0..3 to BECH from ALICE, 4 to BASE58 from BOB, 5 without a swap row."""
    swap_rows: list[dict[str, Any]] = []
    payout_rows: list[dict[str, Any]] = []
    for i in range(6):
        when = T0 + timedelta(minutes=i)
        if i < 5:
            swap_rows.append(
                {
                    "transaction_hash": _hash(i),
                    "log_index": 0,
                    "block_number": 100 + i,
                    "icy_amount": 10**30 + i,
                    "from_address": ALICE if i < 4 else BOB,
                    "btc_address": BECH if i < 4 else BASE58,
                    "btc_amount": 50_000 + i,
                    "created_at": when,
                    "updated_at": when,
                }
            )
        payout_rows.append(
            {
                "swap_transaction_hash": _hash(i),
                "btc_address": BECH if i < 4 else BASE58,
                "subtotal": 50_000 + i,
                "service_fee": 3000,
                "network_fee": 150 if i == 0 else None,
                "total": 47_000 + i,
                "status": "completed" if i in (0, 4) else "pending",
                "btc_transaction_hash": "ab" * 32 if i == 0 else None,
                "attempts": 0,
                "processed_at": when if i == 0 else None,
                "created_at": when,
                "updated_at": when,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(swaps), swap_rows)
        await conn.execute(insert(payouts), payout_rows)


async def _get(engine: AsyncEngine, query: str = "") -> Any:
    async with client_for(make_app(routes, {"engine": engine})) as client:
        return await client.get("/api/v1/transactions" + query)


async def test_empty_listing(engine: AsyncEngine) -> None:
    resp = await _get(engine)
    assert resp.status_code == 200
    assert resp.json() == {"total": 0, "transactions": []}


async def test_rows_newest_first_with_swap_and_strings(engine: AsyncEngine) -> None:
    await _seed(engine)
    resp = await _get(engine)
    body = resp.json()
    assert set(body) == {"total", "transactions"}  # no envelope
    assert body["total"] == 6
    txs = body["transactions"]
    assert [t["swap_transaction_hash"] for t in txs] == [_hash(i) for i in range(5, -1, -1)]
    assert txs[0]["icy_swap_tx"] is None  # no swap row for payout 5
    oldest = txs[-1]
    assert (oldest["subtotal"], oldest["service_fee"], oldest["total"]) == ("50000", "3000", "47000")
    assert oldest["network_fee"] == "150"
    assert oldest["processed_at"] == "2024-01-01T00:00:00Z"
    assert oldest["created_at"] == "2024-01-01T00:00:00Z"
    swap = oldest["icy_swap_tx"]
    assert swap == {
        "transaction_hash": _hash(0),
        "block_number": 100,
        "icy_amount": str(10**30),
        "from_address": ALICE,
        "btc_address": BECH,
        "btc_amount": "50000",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    }
    assert set(oldest) == {
        "id",
        "btc_transaction_hash",
        "swap_transaction_hash",
        "swap_event_index",
        "btc_address",
        "subtotal",
        "service_fee",
        "network_fee",
        "total",
        "status",
        "confirmations",
        "failure_reason",
        "hold_reason",
        "processed_at",
        "created_at",
        "updated_at",
        "icy_swap_tx",
    }
    assert txs[1]["network_fee"] == "0"
    assert txs[1]["processed_at"] is None


async def test_each_payout_joins_its_own_swap_event(engine: AsyncEngine) -> None:
    """Two Swap events in one transaction (a batched call) owe two payouts; each row shows its own event, and
    the new fields (confirming, confirmations, failure and hold reasons) are listed as stored."""
    tx = _hash(77)
    async with engine.begin() as conn:
        await conn.execute(
            insert(swaps),
            [
                {
                    "transaction_hash": tx,
                    "log_index": 10 + n,
                    "event_index": n,
                    "block_number": 500,
                    "icy_amount": 10**21 * (n + 1),
                    "from_address": ALICE,
                    "btc_address": BECH,
                    "btc_amount": 60_000 + n,
                }
                for n in range(2)
            ],
        )
        await conn.execute(
            insert(payouts),
            [
                {
                    "swap_transaction_hash": tx,
                    "swap_event_index": 0,
                    "btc_address": BECH,
                    "subtotal": 60_000,
                    "service_fee": 3000,
                    "total": 57_000,
                    "status": "confirming",
                    "confirmations": 1,
                    "btc_transaction_hash": "cd" * 32,
                    "hold_reason": None,
                    "attempts": 1,
                    "updated_at": T0,
                },
                {
                    "swap_transaction_hash": tx,
                    "swap_event_index": 1,
                    "btc_address": BECH,
                    "subtotal": 60_001,
                    "service_fee": 3000,
                    "total": 57_001,
                    "status": "held",
                    "hold_reason": "over_limit",
                    "btc_transaction_hash": None,
                    "confirmations": 0,
                    "attempts": 0,
                    "updated_at": T0 + timedelta(minutes=1),
                },
            ],
        )
    body = (await _get(engine)).json()
    assert body["total"] == 2
    held, confirming = body["transactions"]
    assert (held["swap_event_index"], held["status"], held["hold_reason"]) == (1, "held", "over_limit")
    assert held["icy_swap_tx"]["btc_amount"] == "60001"
    assert held["confirmations"] == 0
    assert (confirming["swap_event_index"], confirming["status"], confirming["confirmations"]) == (0, "confirming", 1)
    assert confirming["icy_swap_tx"]["btc_amount"] == "60000"
    assert confirming["failure_reason"] is None
    assert (await _get(engine, "?status=confirming")).json()["total"] == 1


async def test_paging_and_total(engine: AsyncEngine) -> None:
    await _seed(engine)
    first = (await _get(engine, "?limit=4")).json()
    second = (await _get(engine, "?limit=4&offset=4")).json()
    assert first["total"] == second["total"] == 6
    assert len(first["transactions"]) == 4
    assert len(second["transactions"]) == 2
    ids = [t["id"] for t in first["transactions"] + second["transactions"]]
    assert len(set(ids)) == 6
    beyond = (await _get(engine, "?offset=100")).json()
    assert beyond == {"total": 6, "transactions": []}


async def test_filters_and_total_counts_same_filter(engine: AsyncEngine) -> None:
    await _seed(engine)
    by_evm = (await _get(engine, f"?evm_address={ALICE.lower()}")).json()
    assert by_evm["total"] == 4
    assert {t["icy_swap_tx"]["from_address"] for t in by_evm["transactions"]} == {ALICE}
    by_btc = (await _get(engine, f"?btc_address={BECH.upper()}")).json()  # bech32 is case-insensitive
    assert by_btc["total"] == 4
    assert (await _get(engine, f"?btc_address={BASE58}")).json()["total"] == 2  # payouts 4 and 5
    assert (await _get(engine, f"?btc_address={BASE58.upper()}")).json()["total"] == 0  # base58 is not
    by_status = (await _get(engine, "?status=completed")).json()
    assert by_status["total"] == 2
    # Both address filters together (fix: the old SQL was ambiguous and answered 500).
    both = await _get(engine, f"?btc_address={BECH}&evm_address={ALICE}&status=pending&limit=2")
    assert both.status_code == 200
    assert both.json()["total"] == 3
    assert len(both.json()["transactions"]) == 2
    none = (await _get(engine, f"?btc_address={BECH}&evm_address={BOB}")).json()
    assert none == {"total": 0, "transactions": []}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),  # fix: used to return an empty page
        ("limit=-1", "limit"),  # fix: used to return everything
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=99999999999999", "offset"),
        ("status=done", "status"),
        ("evm_address=0x123", "evm_address"),
        ("evm_address=alice", "evm_address"),
        ("btc_address=not%20an%20address", "btc_address"),
        ("btc_address=" + "a" * 200, "btc_address"),
    ],
)
async def test_invalid_parameters_are_400(engine: AsyncEngine, query: str, field: str) -> None:
    resp = await _get(engine, "?" + query)
    assert resp.status_code == 400
    body = resp.json()
    assert body["data"] is None
    assert body["error"] == "invalid_request"
    assert [e["field"] for e in body["errors"]] == [field]


async def test_every_bad_parameter_reported(engine: AsyncEngine) -> None:
    resp = await _get(engine, "?limit=0&offset=-5&status=nope")
    assert resp.status_code == 400
    assert sorted(e["field"] for e in resp.json()["errors"]) == ["limit", "offset", "status"]


async def test_limit_bounds_accepted(engine: AsyncEngine) -> None:
    await _seed(engine)
    assert len((await _get(engine, "?limit=1")).json()["transactions"]) == 1
    assert len((await _get(engine, "?limit=100")).json()["transactions"]) == 6

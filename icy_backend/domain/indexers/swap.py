"""Swap event indexer (SPEC §9): each ``Swap(uint256 icyAmount, string btcAddress, uint256 btcAmount)`` log
becomes, in the same DB transaction as the chunk's cursor, an ``onchain_icy_swap_transactions`` row and one
payout in ``onchain_btc_processed_transactions``:

``subtotal = btc_amount``, ``service_fee = max(floor(btc_amount * rate), min_fee)`` (integers),
``total = subtotal - service_fee``; a payout that can never be paid is created ``failed`` at once
(``below_dust`` when ``total`` is below the address type's dust limit, ``invalid_address`` when the address is
not one of ``BTC_NETWORK``).
"""

from __future__ import annotations

import logging
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import NotConfigured
from icy_backend.clients.evm import EvmRpcClient, Log, parse_transaction
from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_address import InvalidAddress, parse_address
from icy_backend.domain.fees import payout_amounts
from icy_backend.domain.indexers import cursors
from icy_backend.domain.indexers.logscan import scan_logs
from icy_backend.metrics.business import indexed
from icy_backend.metrics.families import Metrics
from icy_backend.settings import Settings
from jobs.context import JobContext

log = logging.getLogger(__name__)

SWAP_TOPIC = "0x" + keccak(text="Swap(uint256,string,uint256)").hex()
MAX_BTC_ADDRESS = 100
BATCH = 50


def decode_swap(entry: Log) -> tuple[int, str, int] | None:
    """``(icy_amount, btc_address, btc_amount)`` of a Swap log, or None when it does not decode."""
    if not entry.topics or entry.topics[0] != SWAP_TOPIC:
        return None
    try:
        icy_amount, btc_address, btc_amount = abi_decode(["uint256", "string", "uint256"], entry.data)
    except Exception:
        return None
    return int(icy_amount), str(btc_address), int(btc_amount)


def _storable(text: str) -> str:
    # Event strings are arbitrary user input: keep printable ASCII only (PostgreSQL refuses NUL) and fit the column.
    return "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text)[:MAX_BTC_ADDRESS]


def payout_row(swap_hash: str, btc_address: str, btc_amount: int, settings: Settings, now: Any) -> dict[str, Any]:
    """The payout of one Swap event, ``failed`` at once when it can never be paid."""
    amounts = payout_amounts(btc_amount, settings.BTC_SERVICE_FEE_PERCENTAGE, settings.BTC_MIN_SATOSHI_FEE)
    status, reason = "pending", None
    try:
        if _storable(btc_address) != btc_address:
            raise InvalidAddress("malformed")
        dust = parse_address(btc_address, settings.btc_network).dust_limit
        if amounts.below_dust(dust):
            status, reason = "failed", "below_dust"
    except InvalidAddress:
        status, reason = "failed", "invalid_address"
    return {
        "swap_transaction_hash": swap_hash,
        "btc_address": _storable(btc_address),
        "subtotal": amounts.subtotal,
        "service_fee": amounts.service_fee,
        # A negative total (fee above the amount) is stored as 0: it is failed and never paid.
        "total": max(amounts.total, 0),
        "status": status,
        "failure_reason": reason,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


class SwapIndexer:
    """Indexes the swap contract's Swap events and creates their payouts."""

    def __init__(self, engine: AsyncEngine, evm: EvmRpcClient, settings: Settings, metrics: Metrics) -> None:
        self.engine = engine
        self.evm = evm
        self.settings = settings
        self.metrics = metrics

    async def _senders(self, hashes: list[str]) -> dict[str, str]:
        senders: dict[str, str] = {}
        for i in range(0, len(hashes), BATCH):
            part = hashes[i : i + BATCH]
            answers = await self.evm.batch(
                [("eth_getTransactionByHash", [h]) for h in part], op="eth_getTransactionByHash"
            )
            for h, answer in zip(part, answers, strict=True):
                if answer:
                    senders[h] = str(to_checksum_address(parse_transaction(answer).from_address))
        return senders

    async def run(self, ctx: JobContext) -> int:
        contract = self.settings.BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR
        if not contract:
            raise NotConfigured("base_rpc", "BLOCKCHAIN_ICY_SWAP_CONTRACT_ADDR")
        async with self.engine.connect() as conn:
            cursor = await cursors.get_block(conn, cursors.SWAP_CURSOR)
        start = cursor + 1 if cursor is not None else self.settings.BLOCKCHAIN_INITIAL_ICY_SWAP_BLOCK_NUMBER
        end = await self.evm.block_number() - self.settings.BLOCKCHAIN_CONFIRMATIONS
        created = 0

        async def store(logs: list[Log], chunk_end: int) -> int:
            nonlocal created
            events = []
            for entry in logs:
                decoded = decode_swap(entry)
                if decoded is None:
                    log.error("swap indexer: skipped a Swap log that does not decode")
                    ctx.item_failed("undecodable_log")
                    continue
                events.append((entry, decoded))
            senders = await self._senders(sorted({e.transaction_hash for e, _ in events}))
            now = utcnow()
            swap_rows = [
                {
                    "transaction_hash": e.transaction_hash,
                    "log_index": e.log_index,
                    "block_number": e.block_number,
                    "icy_amount": icy,
                    "from_address": senders.get(e.transaction_hash, "0x" + "00" * 20),
                    "btc_address": _storable(btc),
                    "btc_amount": sats,
                    "created_at": now,
                    "updated_at": now,
                }
                for e, (icy, btc, sats) in events
            ]
            by_key = {(e.transaction_hash, e.log_index): d for e, d in events}
            async with self.engine.begin() as conn:
                new_keys: list[tuple[str, int]] = []
                if swap_rows:
                    stmt = insert_ignore(self.engine, swaps).returning(swaps.c.transaction_hash, swaps.c.log_index)
                    new_keys = [(r[0], int(r[1])) for r in (await conn.execute(stmt, swap_rows)).all()]
                payout_rows = [
                    payout_row(h, by_key[(h, i)][1], by_key[(h, i)][2], self.settings, now) for h, i in new_keys
                ]
                made: set[str] = set()
                if payout_rows:
                    stmt = insert_ignore(self.engine, payouts).returning(payouts.c.swap_transaction_hash)
                    made = {r[0] for r in (await conn.execute(stmt, payout_rows)).all()}
                await cursors.set_block(conn, cursors.SWAP_CURSOR, chunk_end)
            for h, _ in new_keys:
                if h in made:
                    made.discard(h)
                    created += 1
                    ctx.item_succeeded()
                else:
                    # The payout key is the swap tx hash: a second Swap event in one transaction cannot get
                    # its own payout row. Loud, so an operator can settle it by hand.
                    log.error("swap indexer: a second Swap event in one transaction has no payout row")
                    ctx.item_failed("duplicate_swap_transaction")
            indexed(self.metrics, "icy_swap", len(new_keys))
            ctx.set_metadata("cursor_block", chunk_end)
            return len(new_keys)

        result = await scan_logs(
            self.evm, contract, [SWAP_TOPIC], start, end, self.settings.BLOCKCHAIN_LOG_CHUNK_BLOCKS, store, ctx
        )
        ctx.set_metadata("rows_inserted", result.inserted)
        ctx.set_metadata("payouts_created", created)
        log.info("swap indexer: %d chunk(s), %d event(s), %d payout(s)", result.chunks, result.inserted, created)
        return result.inserted


__all__ = ["SWAP_TOPIC", "SwapIndexer", "decode_swap", "payout_row"]

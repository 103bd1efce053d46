"""BTC treasury history indexer (SPEC §9): Esplora ``/txs`` then ``/txs/chain/{last}`` back to the last stored tx.

One row per (txid, output index, type), confirmed transactions only:

* ``in``: an output paying the treasury in a transaction that does not spend treasury coins
  (``other_address`` = the first input's address);
* ``out``: in a transaction spending treasury coins, every output paying someone else
  (``other_address`` = that output's address, ``fee`` = the transaction's fee). Outputs of such a transaction
  back to the treasury are change, not income, so they are not ``in`` rows: that way
  sum(in) - sum(out) - sum(fee per distinct out tx) is the treasury's balance.

Rows are inserted page by page with ``ON CONFLICT DO NOTHING``; the cursor (newest stored txid) moves only after
the whole walk, so an interrupted run is simply repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.clients.errors import InvalidResponse
from icy_backend.clients.esplora import EsploraClient, EsploraTx
from icy_backend.db.engine import insert_ignore
from icy_backend.db.tables import onchain_btc_transactions
from icy_backend.db.types import utcnow
from icy_backend.domain.indexers import cursors
from icy_backend.domain.indexers.logscan import Report
from icy_backend.metrics.business import indexed
from icy_backend.metrics.families import Metrics

log = logging.getLogger(__name__)

PAGE_SIZE = 25  # confirmed transactions per Esplora page
_BECH32 = ("bc1", "tb1", "bcrt1")


def _norm(address: str | None) -> str | None:
    if address is None:
        return None
    return address.lower() if address.lower().startswith(_BECH32) else address


def tx_rows(tx: EsploraTx, treasury: str) -> list[dict[str, Any]]:
    """The treasury's rows of one confirmed transaction (see the module docstring)."""
    me = _norm(treasury)
    spends = any(i.prevout is not None and _norm(i.prevout.address) == me for i in tx.vin)
    sender = next((i.prevout.address for i in tx.vin if i.prevout is not None and i.prevout.address), None)
    now = utcnow()
    base = {
        "transaction_hash": tx.txid,
        "block_time": tx.status.block_time,
        "block_height": tx.status.block_height,
        "created_at": now,
        "updated_at": now,
    }
    rows: list[dict[str, Any]] = []
    for n, out in enumerate(tx.vout):
        if _norm(out.address) == me:
            if not spends:
                rows.append(
                    {**base, "output_index": n, "type": "in", "amount": out.value, "other_address": sender, "fee": None}
                )
        elif spends and (out.address is not None or out.value > 0):
            rows.append(
                {
                    **base,
                    "output_index": n,
                    "type": "out",
                    "amount": out.value,
                    "other_address": out.address,
                    "fee": tx.fee,
                }
            )
    return rows


class BtcIndexer:
    """Walks the treasury's history newest-first down to the last stored transaction."""

    def __init__(self, engine: AsyncEngine, esplora: EsploraClient, treasury: str, metrics: Metrics) -> None:
        self.engine = engine
        self.esplora = esplora
        self.treasury = treasury
        self.metrics = metrics

    async def _store(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        stmt = insert_ignore(self.engine, onchain_btc_transactions).returning(onchain_btc_transactions.c.id)
        async with self.engine.begin() as conn:
            inserted = len((await conn.execute(stmt, rows)).all())
        indexed(self.metrics, "btc", inserted)
        return inserted

    async def run(self, heartbeat: Callable[[], None], report: Report) -> int:
        """Index new confirmed history; returns the number of rows inserted."""
        async with self.engine.connect() as conn:
            stop = await cursors.get_txid(conn, cursors.BTC_CURSOR)
        newest: str | None = None
        last_seen: str | None = None
        seen_pages: set[str] = set()
        inserted = pages = 0
        while True:
            page = await self.esplora.address_txs(self.treasury, last_seen)
            pages += 1
            confirmed = [tx for tx in page if tx.status.confirmed]
            if newest is None and confirmed:
                newest = confirmed[0].txid
            rows: list[dict[str, Any]] = []
            reached = False
            for tx in confirmed:
                if tx.txid == stop:
                    reached = True
                    break
                rows.extend(tx_rows(tx, self.treasury))
            inserted += await self._store(rows)
            heartbeat()
            if reached or len(confirmed) < PAGE_SIZE:
                break
            last_seen = confirmed[-1].txid
            if last_seen in seen_pages:  # an upstream repeating itself would loop forever
                raise InvalidResponse("blockstream_api", "history paging does not advance")
            seen_pages.add(last_seen)
        if newest is not None and newest != stop:
            async with self.engine.begin() as conn:
                await cursors.set_txid(conn, cursors.BTC_CURSOR, newest)
        report.set_metadata("pages", pages)
        report.set_metadata("rows_inserted", inserted)
        log.info("btc indexer: %d page(s), %d row(s) inserted", pages, inserted)
        return inserted


__all__ = ["PAGE_SIZE", "BtcIndexer", "tx_rows"]

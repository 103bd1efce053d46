"""Shared state of one payout processor: clients, per-run caches, locks, the row moves and the run report."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import ColumnElement, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.clients.esplora import EsploraClient, EsploraTx
from icy_backend.clients.prices import PriceClient
from icy_backend.db.engine import is_postgres
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.domain.btc_tx import BuiltTx, Utxo, fee_rate
from icy_backend.domain.payouts.store import mark_candidates
from icy_backend.domain.row_machine import RowLog, fail_row, move_row, process_lock
from icy_backend.domain.wallet import PayoutWallet
from icy_backend.settings import Settings

log = logging.getLogger("icy_backend.domain.payouts")
rows_log = RowLog(log, "payout")

# pg_advisory_xact_lock key serialising payout building across replicas ("icy payout" as ASCII, fits int64).
WALLET_LOCK_KEY = 0x6963792D706179
# Confirmations of a conflicting spend that prove no candidate can ever confirm (SPEC §9 step 7).
DEAD_PROOF_CONFIRMATIONS = 6
WAITING = "waiting"
"""Outcome of an item that is fine and waits for the chain (not counted as a success or a failure)."""

Checkpoint = Callable[[str, int], Awaitable[None]]
"""Test seam ``(point, row_id)`` run at each crash-relevant point: ``stored`` (row ``broadcasting`` committed,
before the send), ``sent`` (the node answered, before the row moves), ``bump_stored`` (replacement stored, before
its send), ``settled`` (a row moved after reconciliation)."""


@dataclass
class PayoutRunReport:
    """What one run did (row ids and classes only: no addresses or amounts)."""

    completed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    unconfirmed: dict[int, str] = field(default_factory=dict)
    returned_to_pending: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    bumps: list[str] = field(default_factory=list)  # fee-bump outcomes: replaced / capped


def rate_text(built: BuiltTx) -> str:
    """The candidate's actual fee rate (sat/vB, 2 decimals, rounded down) as a decimal string."""
    return str((Decimal(built.fee) / Decimal(max(1, built.vsize))).quantize(Decimal("0.01"), rounding=ROUND_DOWN))


class PayoutBase:
    """Clients, settings and the helpers every step uses."""

    def __init__(
        self,
        engine: AsyncEngine,
        esplora: EsploraClient,
        prices: PriceClient,
        settings: Settings,
        wallet: PayoutWallet,
        *,
        before_broadcast: Callable[[int], Awaitable[None]] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.engine = engine
        self.esplora = esplora
        self.prices = prices
        self.settings = settings
        self.wallet = wallet
        self.network = settings.btc_network
        self.before_broadcast = before_broadcast
        self.checkpoint = checkpoint
        self._fees: dict[str, float] | None = None
        self._tip: int | None = None
        self._prev_txs: dict[str, EsploraTx] = {}
        self._limit_blocked = False

    def new_run(self) -> None:
        """Fee estimates and the tip are read once per run; the daily-limit queue restarts."""
        self._fees = None
        self._tip = None
        self._limit_blocked = False

    async def point(self, name: str, row_id: int) -> None:
        if self.checkpoint is not None:
            await self.checkpoint(name, row_id)
        if name == "stored" and self.before_broadcast is not None:
            await self.before_broadcast(row_id)

    async def fee_rate(self) -> int:
        if self._fees is None:
            self._fees = await self.esplora.fee_estimates()
        return fee_rate(self._fees, self.settings.BTC_PAYOUT_CONF_TARGET)

    async def tip(self) -> int:
        if self._tip is None:
            self._tip = await self.esplora.tip_height()
        return self._tip

    async def wallet_coins(self) -> list[Utxo]:
        return [Utxo(u.txid, u.vout, u.value, u.confirmed) for u in await self.esplora.utxos(self.wallet.address)]

    async def prevout(self, txid: str, vout: int) -> Utxo:
        """A coin spent by a candidate, with its value (from its parent transaction; parents never change)."""
        parent = self._prev_txs.get(txid)
        if parent is None:
            found = await self.esplora.tx(txid)
            if found is None:
                from icy_backend.clients.errors import InvalidResponse

                raise InvalidResponse("blockstream_api", "a candidate's parent transaction is unknown")
            parent = self._prev_txs[txid] = found
        return Utxo(txid, vout, parent.vout[vout].value, True)

    def wallet_lock(self) -> Any:
        return process_lock(f"btc-wallet:{self.wallet.address}")

    async def lock_wallet(self, conn: AsyncConnection) -> None:
        """Across replicas: building (coin selection) is serialised by a transaction-scoped advisory lock."""
        if is_postgres(self.engine):
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WALLET_LOCK_KEY})

    async def move(
        self, row_id: int, expected: str, new: str, *where: ColumnElement[Any], reason: str | None = None, **values: Any
    ) -> bool:
        """Compare-and-set move in its own transaction; logs the transition."""
        async with self.engine.begin() as conn:
            moved = await move_row(conn, T, row_id, expected, *where, status=new, **values)
        if moved and new != expected:
            rows_log.transition(row_id, expected, new, reason)
        return moved

    async def stays(self, row_id: int, expected: str, reason: str, report: PayoutRunReport) -> str:
        """A condition that can clear: the row stays where it is, ``attempts`` + 1, ``failure_reason`` set."""
        async with self.engine.begin() as conn:
            await move_row(conn, T, row_id, expected, status=expected, attempts=T.c.attempts + 1, failure_reason=reason)
        if expected == "pending":
            report.deferred[row_id] = reason
        else:
            report.unconfirmed[row_id] = reason
        rows_log.stays(row_id, expected, reason)
        return reason

    async def fail(self, row_id: int, expected: str, reason: str, report: PayoutRunReport) -> str:
        """Final failure: the row is ``failed`` and its candidates ``dead`` (none can ever confirm)."""
        async with self.engine.begin() as conn:
            if await fail_row(conn, T, row_id, expected, reason):
                await mark_candidates(conn, row_id, "dead")
                report.failed[row_id] = reason
                rows_log.transition(row_id, expected, "failed", reason)
        return reason


__all__ = ["DEAD_PROOF_CONFIRMATIONS", "WAITING", "WALLET_LOCK_KEY", "Checkpoint", "PayoutBase", "PayoutRunReport"]

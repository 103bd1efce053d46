"""Database reads and writes of the payout state machine: candidates, reservations, the daily outflow, counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from icy_backend.db.tables import btc_payout_candidates as C
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_tx import BuiltTx, Outpoint, parse_raw

IN_FLIGHT = ("broadcasting", "confirming")
DAY = timedelta(hours=24)


@dataclass(frozen=True)
class Candidate:
    """One signed transaction of a payout (any two candidates of a payout conflict)."""

    id: int
    payout_id: int
    txid: str
    raw_tx: str
    fee: int
    fee_rate: str
    broadcast_height: int | None
    status: str

    @property
    def inputs(self) -> tuple[Outpoint, ...]:
        return parse_raw(self.raw_tx)[1]


def _candidate(row: Any) -> Candidate:
    return Candidate(
        id=int(row["id"]),
        payout_id=int(row["payout_id"]),
        txid=str(row["txid"]),
        raw_tx=str(row["raw_tx"]),
        fee=int(row["fee"]),
        fee_rate=str(row["fee_rate"]),
        broadcast_height=None if row["broadcast_height"] is None else int(row["broadcast_height"]),
        status=str(row["status"]),
    )


async def candidates(conn: AsyncConnection, payout_id: int, *, live_only: bool = True) -> list[Candidate]:
    """The payout's candidates, oldest first (without ``dead`` ones unless ``live_only`` is False)."""
    query = select(C).where(C.c.payout_id == payout_id).order_by(C.c.id)
    if live_only:
        query = query.where(C.c.status != "dead")
    return [_candidate(r) for r in (await conn.execute(query)).mappings()]


async def insert_candidate(conn: AsyncConnection, payout_id: int, built: BuiltTx, rate: str, height: int | None) -> int:
    result = await conn.execute(
        insert(C).values(
            payout_id=payout_id,
            txid=built.txid,
            raw_tx=built.raw_hex,
            fee=built.fee,
            fee_rate=rate,
            broadcast_height=height,
            status="active",
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def mark_candidates(
    conn: AsyncConnection, payout_id: int, status: str, *, ids: Iterable[int] | None = None
) -> None:
    """Set the status of the payout's live candidates (all, or those in ``ids``)."""
    query = update(C).where(C.c.payout_id == payout_id, C.c.status != "dead")
    if ids is not None:
        query = query.where(C.c.id.in_(list(ids)))
    await conn.execute(query.values(status=status, updated_at=utcnow()))


async def reserved_outpoints(conn: AsyncConnection, *, except_payout: int | None = None) -> set[Outpoint]:
    """Coins spent by any live candidate of a payout that is not ``completed`` (SPEC §9 step 8)."""
    query = (
        select(C.c.raw_tx)
        .select_from(C.join(T, T.c.id == C.c.payout_id))
        .where(C.c.status != "dead", T.c.status != "completed")
    )
    if except_payout is not None:
        query = query.where(C.c.payout_id != except_payout)
    reserved: set[Outpoint] = set()
    for (raw,) in await conn.execute(query):
        reserved.update(parse_raw(str(raw))[1])
    return reserved


async def outflow_24h(conn: AsyncConnection, now: datetime | None = None) -> int:
    """Sats sent to users by payouts that first reached ``broadcasting`` in the last 24 h (fees not counted).

    Summed in Python: amounts are text on SQLite, and the rows of one day are few."""
    since = (now or utcnow()) - DAY
    rows = await conn.execute(select(T.c.total).where(T.c.broadcast_at.is_not(None), T.c.broadcast_at >= since))
    return sum(int(total) for (total,) in rows)


async def ids_with_status(engine: AsyncEngine, statuses: Iterable[str]) -> list[int]:
    """Ids of the rows in ``statuses``, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(T.c.id).where(T.c.status.in_(list(statuses))).order_by(T.c.created_at, T.c.id))
        return [int(r[0]) for r in rows]


@dataclass(frozen=True)
class QueueCounts:
    """What the gauges of SPEC §6 show after a run."""

    by_status: dict[str, int]
    oldest_unconfirmed_seconds: float
    deferred_daily_limit: int

    @property
    def waiting(self) -> int:
        """Payouts not yet taken by a node (pending, broadcasting; not held). ``confirming`` ones are counted
        apart: they wait for blocks, not for the service, and their age has its own gauge."""
        return sum(self.by_status.get(s, 0) for s in ("pending", "broadcasting"))


async def queue_counts(engine: AsyncEngine) -> QueueCounts:
    async with engine.connect() as conn:
        rows = await conn.execute(select(T.c.status, func.count()).group_by(T.c.status))
        by_status = {str(s): int(n) for s, n in rows}
        oldest = await conn.scalar(select(func.min(T.c.broadcast_at)).where(T.c.status.in_(IN_FLIGHT)))
        deferred = await conn.scalar(
            select(func.count()).where(T.c.status == "pending", T.c.failure_reason == "daily_limit")
        )
    age = 0.0
    if oldest is not None:
        age = max(0.0, (utcnow() - _aware(oldest)).total_seconds())
    return QueueCounts(by_status, age, int(deferred or 0))


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


__all__ = [
    "DAY",
    "IN_FLIGHT",
    "Candidate",
    "QueueCounts",
    "candidates",
    "ids_with_status",
    "insert_candidate",
    "mark_candidates",
    "outflow_24h",
    "queue_counts",
    "reserved_outpoints",
]

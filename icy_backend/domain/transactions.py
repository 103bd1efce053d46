"""The payout listing behind ``GET /api/v1/transactions`` (SPEC §4): filters, paging, total, row JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.tables import onchain_icy_swap_transactions as swaps

_BECH32_PREFIXES = ("bc1", "tb1", "bcrt1")


@dataclass(frozen=True)
class TransactionFilter:
    """Validated query of the listing. ``evm_address`` matches the swap's sender case-insensitively."""

    limit: int = 10
    offset: int = 0
    btc_address: str | None = None
    evm_address: str | None = None
    status: str | None = None


def _conditions(filt: TransactionFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if filt.btc_address:
        text = filt.btc_address.strip()
        if text.lower().startswith(_BECH32_PREFIXES):
            # bech32 is case-insensitive; base58 is not, so those compare exactly.
            conds.append(func.lower(payouts.c.btc_address) == text.lower())
        else:
            conds.append(payouts.c.btc_address == text)
    if filt.evm_address:
        conds.append(func.lower(swaps.c.from_address) == filt.evm_address.lower())
    if filt.status:
        conds.append(payouts.c.status == filt.status)
    return conds


def _joined(stmt: Select[Any]) -> Select[Any]:
    # A payout is owed by one Swap event: (transaction hash, event index within that transaction). A
    # transaction with several Swap events has several payouts, each joined to its own event.
    return stmt.select_from(
        payouts.outerjoin(
            swaps,
            and_(
                swaps.c.transaction_hash == payouts.c.swap_transaction_hash,
                swaps.c.event_index == payouts.c.swap_event_index,
            ),
        )
    )


SWAP_COLUMNS = ("transaction_hash", "block_number", "icy_amount", "from_address", "btc_address", "btc_amount")


async def list_transactions(engine: AsyncEngine, filt: TransactionFilter) -> tuple[int, list[dict[str, Any]]]:
    """``(total, rows)``: ``total`` counts every matching row; ``rows`` is the page, newest first."""
    conds = _conditions(filt)
    count_stmt = _joined(select(func.count(payouts.c.id))).where(*conds)
    swap_cols = [swaps.c[name].label(f"s_{name}") for name in (*SWAP_COLUMNS, "created_at", "updated_at")]
    page_stmt = (
        _joined(select(payouts, *swap_cols))
        .where(*conds)
        .order_by(payouts.c.updated_at.desc(), payouts.c.id.desc())
        .limit(filt.limit)
        .offset(filt.offset)
    )
    async with engine.connect() as conn:
        total = (await conn.execute(count_stmt)).scalar_one()
        result = await conn.execute(page_stmt)
        rows = [row_json(row._mapping) for row in result]
    return int(total), rows


def rfc3339(value: datetime | None) -> str | None:
    """UTC RFC 3339 with a ``Z`` suffix, or ``None``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _amount(value: int | None) -> str | None:
    return None if value is None else str(value)


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One payout row as SPEC §4 lists it; amounts are decimal strings; ``icy_swap_tx`` null if no swap."""
    swap: dict[str, Any] | None = None
    if row["s_block_number"] is not None:
        swap = {
            "transaction_hash": row["s_transaction_hash"],
            "block_number": int(row["s_block_number"]),
            "icy_amount": _amount(row["s_icy_amount"]),
            "from_address": row["s_from_address"],
            "btc_address": row["s_btc_address"],
            "btc_amount": _amount(row["s_btc_amount"]),
            "created_at": rfc3339(row["s_created_at"]),
            "updated_at": rfc3339(row["s_updated_at"]),
        }
    return {
        "id": int(row["id"]),
        "btc_transaction_hash": row["btc_transaction_hash"],
        "swap_transaction_hash": row["swap_transaction_hash"],
        "swap_event_index": int(row["swap_event_index"]),
        "btc_address": row["btc_address"],
        "subtotal": _amount(row["subtotal"]),
        "service_fee": _amount(row["service_fee"]),
        # Unknown until the payout is sent; "0" keeps the field a decimal string as it always was.
        "network_fee": _amount(row["network_fee"]) if row["network_fee"] is not None else "0",
        "total": _amount(row["total"]),
        "status": row["status"],
        # Of the candidate named by btc_transaction_hash (the confirmed one, or the newest while none is).
        "confirmations": int(row["confirmations"] or 0),
        "failure_reason": row["failure_reason"],
        "hold_reason": row["hold_reason"],
        "processed_at": rfc3339(row["processed_at"]),
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "icy_swap_tx": swap,
    }


__all__ = ["TransactionFilter", "list_transactions", "rfc3339", "row_json"]

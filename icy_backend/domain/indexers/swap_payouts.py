"""The payout of a Swap event (SPEC §9 indexers, *Reorgs*, *Price outliers*): created once per event, keyed by
(``swap_transaction_hash``, ``swap_event_index``), decided at creation, and kept straight across reorgs.

At creation (in the transaction that stores the Swap row):

* ``failed``/``below_dust`` when its total is below the address type's dust limit, ``failed``/``invalid_address``
  when the address is not one of ``BTC_NETWORK`` (never payable);
* ``held``/``price_outlier`` when ``btc_amount`` exceeds the value of ``icy_amount`` at the current pricing ratio
  by more than ``SWAP_PRICE_TOLERANCE`` (the contract pays only what the service signed: a leaked signer key, a
  contract bug or a stale price; a person decides);
* ``held``/``over_limit`` when its total exceeds ``BTC_PAYOUT_MAX_SATS``;
* else ``pending``.

The ratio is an injected async callable. When it cannot be had (the oracle is incomplete, the treasury is 0) the
payout is **not** created: the exception leaves the chunk unstored and the cursor where it was, the run fails
(visible: job-failure metrics and alerts) and the next pass retries. Holding would make a person release every
swap of an outage, and creating it ``pending`` would pay at a price nobody checked.

Reorgs: when a Swap row is deleted, its payout is deleted only while nothing can have been sent for it
(``pending``, ``held``, or ``failed`` without any candidate); otherwise it is kept and flagged ``reorged``
(``reorged_at_block`` = the fork point). When the same event re-appears it re-attaches (flag cleared) — never a
second payout. A flagged payout not re-attached within ``BLOCKCHAIN_REORG_DEPTH_MAX`` blocks is counted by
``icy_backend_payouts_reorged_unattached`` (pages). A payout a person released is deleted too while still
``pending`` (paying for an event that is gone would be worse); if its event re-appears, it is created again and
its holds are decided again, so a person may have to release it a second time. A ``failed`` payout without any
candidate never sent anything, so it goes like a pending one (no page for a payout that never paid).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, exists, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from icy_backend.db.tables import btc_payout_candidates as candidates
from icy_backend.db.tables import onchain_btc_processed_transactions as payouts
from icy_backend.db.types import utcnow
from icy_backend.domain.btc_address import InvalidAddress, parse_address
from icy_backend.domain.fees import payout_amounts
from icy_backend.domain.swap_validation import PricingUnavailable
from icy_backend.settings import Settings

MAX_BTC_ADDRESS = 100

# ICY per 1 BTC x 10^8 (SPEC §9 oracle); raises when pricing is unavailable.
PricingRatio = Callable[[], Awaitable[int]]


def storable(text: str) -> str:
    # Event strings are arbitrary user input: keep printable ASCII only (PostgreSQL refuses NUL) and fit the column.
    return "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text)[:MAX_BTC_ADDRESS]


def is_price_outlier(icy_amount: int, btc_amount: int, ratio: int, tolerance: Decimal) -> bool:
    """``btc_amount`` > value of ``icy_amount`` at ``ratio`` x (1 + tolerance), in exact integers.

    value = icy_wei / (ratio x 100) sats, so the test is btc x ratio x 100 x den > icy x (den + num).
    """
    if ratio <= 0:
        raise PricingUnavailable("ICY/BTC ratio is 0")
    num, den = tolerance.as_integer_ratio()
    return btc_amount * ratio * 100 * den > icy_amount * (den + num)


def payout_row(
    swap_hash: str,
    event_index: int,
    icy_amount: int,
    btc_address: str,
    btc_amount: int,
    settings: Settings,
    ratio: int | None,
    now: Any,
) -> dict[str, Any]:
    """The payout of one Swap event with its creation-time decision (``ratio`` needed unless it fails)."""
    amounts = payout_amounts(btc_amount, settings.BTC_SERVICE_FEE_PERCENTAGE, settings.BTC_MIN_SATOSHI_FEE)
    status, reason, hold = "pending", None, None
    try:
        if storable(btc_address) != btc_address:
            raise InvalidAddress("malformed")
        dust = parse_address(btc_address, settings.btc_network).dust_limit
        if amounts.below_dust(dust):
            status, reason = "failed", "below_dust"
    except InvalidAddress:
        status, reason = "failed", "invalid_address"
    if status == "pending":
        if ratio is None:
            raise PricingUnavailable("no pricing ratio for a payable Swap event")
        if is_price_outlier(icy_amount, btc_amount, ratio, settings.SWAP_PRICE_TOLERANCE):
            status, hold = "held", "price_outlier"
        elif settings.BTC_PAYOUT_MAX_SATS is not None and amounts.total > settings.BTC_PAYOUT_MAX_SATS:
            status, hold = "held", "over_limit"
    return {
        "swap_transaction_hash": swap_hash,
        "swap_event_index": event_index,
        "btc_address": storable(btc_address),
        "subtotal": amounts.subtotal,
        "service_fee": amounts.service_fee,
        # A negative total (fee above the amount) is stored as 0: it is failed and never paid.
        "total": max(amounts.total, 0),
        "status": status,
        "failure_reason": reason,
        "hold_reason": hold,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def payable(btc_address: str, btc_amount: int, settings: Settings) -> bool:
    """Whether the payout of such an event would need the pricing ratio (it is not failed at once)."""
    amounts = payout_amounts(btc_amount, settings.BTC_SERVICE_FEE_PERCENTAGE, settings.BTC_MIN_SATOSHI_FEE)
    try:
        if storable(btc_address) != btc_address:
            return False
        return not amounts.below_dust(parse_address(btc_address, settings.btc_network).dust_limit)
    except InvalidAddress:
        return False


def _key(swap_hash: str, event_index: int) -> Any:
    return and_(payouts.c.swap_transaction_hash == swap_hash, payouts.c.swap_event_index == event_index)


async def reattach(conn: AsyncConnection, keys: Iterable[tuple[str, int]]) -> int:
    """Clear ``reorged`` on the payouts of re-appeared events; returns how many were re-attached."""
    count = 0
    for swap_hash, event_index in keys:
        stmt = (
            update(payouts)
            .where(_key(swap_hash, event_index), payouts.c.reorged.is_(True))
            .values(reorged=False, reorged_at_block=None, updated_at=utcnow())
        )
        count += int((await conn.execute(stmt)).rowcount or 0)
    return count


async def detach(conn: AsyncConnection, keys: Iterable[tuple[str, int]], fork_block: int) -> tuple[int, int]:
    """The events of ``keys`` were rolled back: delete payouts nothing was sent for, flag the others.

    Returns ``(deleted, flagged)``. Both statements are compare-and-set on the status, so a payout the payouts job
    claims at the same moment is either still deletable or already flagged, never both or neither.
    """
    never_sent = or_(
        payouts.c.status.in_(("pending", "held")),
        and_(payouts.c.status == "failed", not_(exists().where(candidates.c.payout_id == payouts.c.id))),
    )
    deleted = flagged = 0
    for swap_hash, event_index in keys:
        deleted += int(
            (await conn.execute(delete(payouts).where(_key(swap_hash, event_index), never_sent))).rowcount or 0
        )
        stmt = (
            update(payouts)
            .where(_key(swap_hash, event_index), payouts.c.reorged.is_(False))
            .values(reorged=True, reorged_at_block=fork_block, updated_at=utcnow())
        )
        flagged += int((await conn.execute(stmt)).rowcount or 0)
    return deleted, flagged


async def count_unattached(conn: AsyncConnection, cursor_block: int, depth_max: int) -> int:
    """Reorged payouts whose event has not re-appeared within ``depth_max`` blocks of their fork point."""
    query = select(func.count()).where(
        payouts.c.reorged.is_(True), payouts.c.reorged_at_block < cursor_block - depth_max
    )
    return int((await conn.execute(query)).scalar_one())


__all__ = [
    "PricingRatio",
    "PricingUnavailable",
    "count_unattached",
    "detach",
    "is_price_outlier",
    "payable",
    "payout_row",
    "reattach",
    "storable",
]

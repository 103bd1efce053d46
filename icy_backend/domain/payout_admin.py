"""What an operator may do to a payout by hand (SPEC §3 ``icy-backend payouts``, §9 ``held``).

Reads for ``list``/``show``, and three compare-and-set moves:

* ``release``: ``held → pending`` (stamps ``released_at``; ``hold_reason`` stays for the record, and a released
  payout is never held again — it still obeys the daily limit);
* ``reject``: ``held → failed`` with ``failure_reason = "rejected"``; the operator's reason text goes to the log;
* ``hold``: ``pending → held`` with ``hold_reason = "operator"`` (stop one payout before it is built, e.g. while a
  leaked signer key is investigated). A payout in ``broadcasting`` or later may already be on the network: it
  cannot be held.

Each move is one ``UPDATE … WHERE id = :id AND status = :expected``: a payout that moved meanwhile (another
operator, the payout processor) is refused and left as it is. A move that took effect is recorded in
``payout_operator_actions`` (who, when, why) in the same transaction, and logged at INFO with who asked and the
payout id only — no address, no amount.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from icy_backend.db.tables import PAYOUT_STATUSES, btc_payout_candidates, payout_operator_actions
from icy_backend.db.tables import onchain_btc_processed_transactions as T
from icy_backend.db.types import utcnow
from icy_backend.domain.row_machine import move_row

log = logging.getLogger(__name__)

REJECTED = "rejected"
"""``failure_reason`` of a payout an operator rejected."""
OPERATOR_HOLD = "operator"
"""``hold_reason`` of a payout an operator held."""
REASON_MAX = 200
"""Longest reason text kept in the log line (one line, no control characters)."""


class PayoutNotFound(LookupError):
    """No payout has this id."""

    def __init__(self, payout_id: int) -> None:
        super().__init__(f"no payout with id {payout_id}")
        self.payout_id = payout_id


class MoveRefused(RuntimeError):
    """The payout is not in the state the move needs (it may have moved meanwhile)."""

    def __init__(self, payout_id: int, action: str, expected: str, current: str) -> None:
        super().__init__(f"payout {payout_id} is {current}, not {expected}: {action} refused")
        self.payout_id = payout_id
        self.action = action
        self.expected = expected
        self.current = current


@dataclass(frozen=True)
class Move:
    """A move that took effect."""

    payout_id: int
    action: str
    old: str
    new: str


@dataclass(frozen=True)
class _Rule:
    expected: str
    new: str


_RULES: dict[str, _Rule] = {
    "release": _Rule("held", "pending"),
    "reject": _Rule("held", "failed"),
    "hold": _Rule("pending", "held"),
}


def clean_reason(text: str) -> str:
    """The operator's reason as one short printable line."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat[:REASON_MAX]


async def list_payouts(engine: AsyncEngine, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Payouts, newest first, optionally only those in ``status``."""
    if status is not None and status not in PAYOUT_STATUSES:
        raise ValueError(f"unknown status {status!r}")
    query = select(T).order_by(T.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(T.c.status == status)
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


@dataclass(frozen=True)
class PayoutDetail:
    """One payout, its transaction candidates and the operators' moves of it (both oldest first)."""

    payout: dict[str, Any]
    candidates: list[dict[str, Any]]
    actions: list[dict[str, Any]]


async def get_payout(engine: AsyncEngine, payout_id: int) -> PayoutDetail:
    """One payout with its candidates and operator actions; :class:`PayoutNotFound` when absent."""
    C, A = btc_payout_candidates, payout_operator_actions
    async with engine.connect() as conn:
        row = (await conn.execute(select(T).where(T.c.id == payout_id))).mappings().first()
        if row is None:
            raise PayoutNotFound(payout_id)
        candidates = (await conn.execute(select(C).where(C.c.payout_id == payout_id).order_by(C.c.id))).mappings().all()
        actions = (await conn.execute(select(A).where(A.c.payout_id == payout_id).order_by(A.c.id))).mappings().all()
    return PayoutDetail(dict(row), [dict(c) for c in candidates], [dict(a) for a in actions])


async def _move(
    engine: AsyncEngine, payout_id: int, action: str, actor: str, reason: str | None, **values: Any
) -> Move:
    rule = _RULES[action]
    async with engine.begin() as conn:
        moved = await move_row(conn, T, payout_id, rule.expected, status=rule.new, **values)
        if moved:
            await conn.execute(
                insert(payout_operator_actions).values(
                    payout_id=payout_id,
                    action=action,
                    old_status=rule.expected,
                    new_status=rule.new,
                    actor=actor[:64],
                    reason=clean_reason(reason) if reason else None,
                    created_at=utcnow(),
                )
            )
        else:
            current = await conn.scalar(select(T.c.status).where(T.c.id == payout_id))
    if not moved:
        if current is None:
            raise PayoutNotFound(payout_id)
        log.info(
            "payout %d: %s refused: it is %s, not %s (asked by %s)", payout_id, action, current, rule.expected, actor
        )
        raise MoveRefused(payout_id, action, rule.expected, str(current))
    return Move(payout_id, action, rule.expected, rule.new)


async def release(engine: AsyncEngine, payout_id: int, actor: str, reason: str | None = None) -> Move:
    """``held → pending``: the payout processor pays it on its next run (within the daily limit)."""
    move = await _move(engine, payout_id, "release", actor, reason, released_at=utcnow(), failure_reason=None)
    log.info("payout %d: held -> pending (released by %s)", payout_id, actor)
    return move


async def reject(engine: AsyncEngine, payout_id: int, actor: str, reason: str) -> Move:
    """``held → failed`` with ``failure_reason = "rejected"``: it is never paid."""
    move = await _move(engine, payout_id, "reject", actor, reason, failure_reason=REJECTED, processed_at=utcnow())
    log.info("payout %d: held -> failed (%s by %s: %s)", payout_id, REJECTED, actor, clean_reason(reason))
    return move


async def hold(engine: AsyncEngine, payout_id: int, actor: str, reason: str) -> Move:
    """``pending → held`` with ``hold_reason = "operator"``: nothing is built for it until it is released."""
    move = await _move(engine, payout_id, "hold", actor, reason, hold_reason=OPERATOR_HOLD)
    log.info("payout %d: pending -> held (%s, by %s: %s)", payout_id, OPERATOR_HOLD, actor, clean_reason(reason))
    return move


def as_text(value: Any) -> str:
    """How a cell is printed: amounts as integers, times in RFC 3339 UTC, empty as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def as_json(
    row: dict[str, Any], amounts: Sequence[str] = ("subtotal", "service_fee", "network_fee", "total", "fee")
) -> dict[str, Any]:
    """A row for ``--json``: amounts as decimal strings (the wire rule for money), times as RFC 3339 strings."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or isinstance(value, bool):
            out[key] = value
        elif key in amounts or isinstance(value, datetime):
            out[key] = as_text(value)
        else:
            out[key] = value
    return out

"""BTC payouts (SPEC §9 payouts, steps 1–10): pay every owed payout exactly once, and see it confirmed.

States of ``onchain_btc_processed_transactions.status``::

    held ──(a person: release)──▶ pending ──claim, build, store candidate──▶ broadcasting
                                   ▲  │ daily limit / funds / fee cap / upstream: stays pending
                                   │  └─never-clearing──▶ failed
                                   │                           │ node has a candidate
                                   │                           ▼
              proof that no        └──────────────────── confirming ──BTC_PAYOUT_CONFIRMATIONS──▶ completed
              candidate can confirm                       │  ▲ evicted: same bytes again; fee: replacement
                                                          └──┘ (stored first, row broadcasting, then sent)

Guards against paying twice: every transaction is stored as a candidate **before** it is sent; every
replacement spends every input of the payout's first candidate, so at most one candidate can ever confirm; a
payout gets a brand-new transaction only when one of those inputs is spent by a foreign transaction with ≥ 6
confirmations; coins of the candidates of every unfinished payout are reserved; building happens under the
wallet lock and every move is a compare-and-set ``UPDATE … WHERE status = <expected>``.
"""

from icy_backend.domain.payouts.base import WALLET_LOCK_KEY, Checkpoint, PayoutRunReport
from icy_backend.domain.payouts.processor import PayoutProcessor, count_waiting
from icy_backend.domain.payouts.store import QueueCounts, queue_counts
from icy_backend.domain.row_machine import SKIPPED

__all__ = [
    "SKIPPED",
    "WALLET_LOCK_KEY",
    "Checkpoint",
    "PayoutProcessor",
    "PayoutRunReport",
    "QueueCounts",
    "count_waiting",
    "queue_counts",
]

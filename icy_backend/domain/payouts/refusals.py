"""What a node's answer to a broadcast means for the payout (SPEC §9 payouts steps 4, 6, 7 and 9)."""

from __future__ import annotations

from enum import Enum


class Answer(Enum):
    """Classes of a broadcast outcome."""

    ACCEPTED = "accepted"  # in the mempool now
    KNOWN = "known"  # the node already has it (mempool or chain): as good as accepted
    FEE = "fee"  # refused for its fee: a replacement may pay more (step 6)
    MISSING = "missing"  # inputs missing, spent or in conflict: reconciliation decides (step 7)
    INVALID = "invalid"  # the transaction itself can never be valid (step 9, never-clearing)
    UNKNOWN = "unknown"  # anything else: the row stays and is retried


_KNOWN = (
    "txn-already-known",
    "txn-already-in-mempool",
    "transaction already in block chain",
    "transaction outputs already in utxo set",
    "already known",
)
_FEE = ("min relay fee not met", "mempool min fee not met", "mempool full", "insufficient fee")
_MISSING = (
    "bad-txns-inputs-missingorspent",
    "missing-inputs",
    "missing inputs",
    "txn-mempool-conflict",
    "bad-txns-spends-conflicting-tx",
)
_INVALID_WORDS = ("dust", "scriptpubkey", "tx-size", "wrong network", "wrong-network")

# Reason classes stored in ``failure_reason`` and used as the ``reason`` label of payouts_failed_total.
INVALID_CLASSES = ("script_verify_failed", "bad_txns", "dust", "scriptpubkey", "tx_size", "wrong_network")


def classify(reason: str) -> tuple[Answer, str | None]:
    """The class of a node's refusal text and, for never-clearing ones, a short reason class."""
    text = reason.strip().lower()
    if any(hint in text for hint in _KNOWN):
        return Answer.KNOWN, None
    if any(hint in text for hint in _MISSING):
        return Answer.MISSING, None
    if any(hint in text for hint in _FEE):
        return Answer.FEE, None
    if "mandatory-script-verify-flag" in text:  # also matches non-mandatory-…
        return Answer.INVALID, "script_verify_failed"
    if text.startswith("bad-txns-"):
        return Answer.INVALID, "bad_txns"
    for word in _INVALID_WORDS:
        if text.startswith(word):
            return Answer.INVALID, word.replace("-", "_").replace(" ", "_")
    return Answer.UNKNOWN, None


__all__ = ["INVALID_CLASSES", "Answer", "classify"]

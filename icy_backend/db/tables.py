"""SQLAlchemy Core tables of SPEC §10 (identical on SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from icy_backend.db.types import Amount, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# Integer primary keys: BigInteger on PostgreSQL, INTEGER (rowid alias) on SQLite.
PK = BigInteger().with_variant(Integer(), "sqlite")


def _timestamps() -> list[Column[object]]:
    return [
        Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
        Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    ]


icy_locked_treasuries = Table(
    "icy_locked_treasuries",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("address", String(42), nullable=False),
    UniqueConstraint("address"),
    *_timestamps(),
)

onchain_btc_transactions = Table(
    "onchain_btc_transactions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("transaction_hash", String(64), nullable=False),
    Column("output_index", Integer, nullable=False),
    Column("block_time", BigInteger, nullable=True),
    Column("block_height", BigInteger, nullable=True),
    Column("type", String(8), nullable=False),
    Column("amount", Amount(), nullable=False),
    Column("other_address", String(100), nullable=True),
    Column("fee", Amount(), nullable=True),
    *_timestamps(),
    UniqueConstraint("transaction_hash", "output_index", "type"),
    CheckConstraint("type IN ('in', 'out')", name="type"),
)

onchain_icy_transactions = Table(
    "onchain_icy_transactions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("transaction_hash", String(66), nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("block_time", BigInteger, nullable=True),
    Column("type", String(8), nullable=False),
    Column("amount", Amount(), nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("block_hash", String(66), nullable=True),
    *_timestamps(),
    UniqueConstraint("transaction_hash", "log_index"),
    CheckConstraint("type IN ('in', 'out', 'transfer')", name="type"),
)

onchain_icy_swap_transactions = Table(
    "onchain_icy_swap_transactions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("transaction_hash", String(66), nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("icy_amount", Amount(), nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("btc_address", String(100), nullable=False),
    Column("btc_amount", Amount(), nullable=False),
    Column("block_hash", String(66), nullable=True),
    # Position of this Swap event among the swap contract's Swap events in its transaction (0, 1, …): stable when
    # a reorg re-includes the transaction elsewhere, unlike ``log_index``. Payouts are keyed by it (SPEC §9).
    Column("event_index", Integer, nullable=False, default=0, server_default="0"),
    *_timestamps(),
    UniqueConstraint("transaction_hash", "log_index"),
)

PAYOUT_STATUSES = ("pending", "broadcasting", "confirming", "completed", "held", "failed")

onchain_btc_processed_transactions = Table(
    "onchain_btc_processed_transactions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    # A payout is keyed by the Swap event that owes it: (swap tx hash, event index within that tx) (SPEC §9).
    Column("swap_transaction_hash", String(66), nullable=False),
    Column("swap_event_index", Integer, nullable=False, default=0, server_default="0"),
    Column("btc_address", String(100), nullable=False),
    Column("subtotal", Amount(), nullable=False),
    Column("service_fee", Amount(), nullable=False),
    Column("network_fee", Amount(), nullable=True),
    Column("total", Amount(), nullable=False),
    Column("status", String(16), nullable=False, default="pending", index=True),
    # The candidate that confirmed, or the newest candidate while none has.
    Column("btc_transaction_hash", String(64), nullable=True),
    Column("raw_tx", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failure_reason", String(64), nullable=True),
    Column("hold_reason", String(64), nullable=True),
    # Its Swap event was rolled back by a reorg after a candidate may have been sent (SPEC §9 reorgs).
    Column("reorged", Boolean, nullable=False, default=False, server_default="0"),
    # The fork point of the reorg that flagged it ``reorged`` (it pages once the Swap indexer is more than
    # ``BLOCKCHAIN_REORG_DEPTH_MAX`` blocks past it without the event re-appearing); NULL otherwise.
    Column("reorged_at_block", BigInteger, nullable=True),
    Column("confirmations", Integer, nullable=False, default=0, server_default="0"),
    # When the payout first reached ``broadcasting`` (the rolling daily limit counts from it).
    Column("broadcast_at", UTCDateTime(), nullable=True),
    # When a person released it from ``held`` (a released payout is never held again).
    Column("released_at", UTCDateTime(), nullable=True),
    Column("processed_at", UTCDateTime(), nullable=True),
    *_timestamps(),
    UniqueConstraint("swap_transaction_hash", "swap_event_index", name="uq_payouts_swap_event"),
    CheckConstraint(
        "status IN ('pending', 'broadcasting', 'confirming', 'completed', 'held', 'failed')",
        name="status",
    ),
)

CANDIDATE_STATUSES = ("active", "replaced", "dead")

btc_payout_candidates = Table(
    "btc_payout_candidates",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column(
        "payout_id",
        PK,
        ForeignKey("onchain_btc_processed_transactions.id", ondelete="CASCADE", name="fk_btc_payout_candidates_payout"),
        nullable=False,
        index=True,
    ),
    Column("txid", String(64), nullable=False),
    Column("raw_tx", Text, nullable=False),
    Column("fee", Amount(), nullable=False),
    # sat/vB as a decimal string (never a float on the money path).
    Column("fee_rate", String(32), nullable=False),
    # Chain tip height when the candidate was first broadcast (fee bumps count blocks from it).
    Column("broadcast_height", BigInteger, nullable=True),
    Column("status", String(16), nullable=False, default="active", server_default="active"),
    *_timestamps(),
    UniqueConstraint("txid"),
    CheckConstraint("status IN ('active', 'replaced', 'dead')", name="status"),
)

SWAP_REQUEST_STATUSES = ("pending", "sending", "completed", "failed")

swap_requests = Table(
    "swap_requests",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("icy_amount", Amount(), nullable=False),
    Column("btc_address", String(100), nullable=False),
    Column("btc_amount", Amount(), nullable=True),
    Column("icy_tx", String(66), nullable=False),
    Column("status", String(16), nullable=False, default="pending", index=True),
    Column("evm_tx_hash", String(66), nullable=True),
    Column("signed_tx", Text, nullable=True),
    # Account nonce and signature deadline of the stored transaction (same-nonce replacement, SPEC §9).
    Column("evm_nonce", BigInteger, nullable=True),
    Column("signature_deadline", BigInteger, nullable=True),
    # Earlier transactions at the same nonce that a replacement superseded (space-separated hashes): any of them
    # may still be the one mined, so the request is decided on all of their receipts.
    Column("replaced_tx_hashes", Text, nullable=True),
    Column("failure_reason", String(64), nullable=True),
    Column("processed_at", UTCDateTime(), nullable=True),
    *_timestamps(),
    UniqueConstraint("icy_tx"),
    CheckConstraint("status IN ('pending', 'sending', 'completed', 'failed')", name="status"),
)

indexer_cursors = Table(
    "indexer_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("block_number", BigInteger, nullable=True),
    Column("txid", String(66), nullable=True),
    Column("block_hash", String(66), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

# Number and hash of the last block of every chunk an EVM indexer scanned, for the last
# ``BLOCKCHAIN_REORG_DEPTH_MAX`` blocks: a quiet contract still has hashes to find a fork point with (SPEC §9).
indexer_checkpoints = Table(
    "indexer_checkpoints",
    metadata,
    Column("name", String(64), nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("block_hash", String(66), nullable=False),
    PrimaryKeyConstraint("name", "block_number"),
)

# One row per operator move of a payout (``icy-backend payouts release|reject|hold``), written in the move's
# transaction. No foreign key: the record outlives a payout deleted by a reorg.
payout_operator_actions = Table(
    "payout_operator_actions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("payout_id", PK, nullable=False, index=True),
    Column("action", String(16), nullable=False),
    Column("old_status", String(16), nullable=False),
    Column("new_status", String(16), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
)

ALL_TABLES = (
    icy_locked_treasuries,
    onchain_btc_transactions,
    onchain_icy_transactions,
    onchain_icy_swap_transactions,
    onchain_btc_processed_transactions,
    btc_payout_candidates,
    swap_requests,
    indexer_cursors,
    indexer_checkpoints,
    payout_operator_actions,
)

"""SQLAlchemy Core tables of SPEC §10 (identical on SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Integer,
    MetaData,
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
    *_timestamps(),
    UniqueConstraint("transaction_hash", "log_index"),
)

PAYOUT_STATUSES = ("pending", "broadcasting", "completed", "failed")

onchain_btc_processed_transactions = Table(
    "onchain_btc_processed_transactions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    # "<swap tx hash>:<log index>" would also be unique; the swap tx hash alone is the natural key (SPEC §10).
    Column("swap_transaction_hash", String(66), nullable=False),
    Column("btc_address", String(100), nullable=False),
    Column("subtotal", Amount(), nullable=False),
    Column("service_fee", Amount(), nullable=False),
    Column("network_fee", Amount(), nullable=True),
    Column("total", Amount(), nullable=False),
    Column("status", String(16), nullable=False, default="pending", index=True),
    Column("btc_transaction_hash", String(64), nullable=True),
    Column("raw_tx", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failure_reason", String(64), nullable=True),
    Column("processed_at", UTCDateTime(), nullable=True),
    *_timestamps(),
    UniqueConstraint("swap_transaction_hash"),
    CheckConstraint("status IN ('pending', 'broadcasting', 'completed', 'failed')", name="status"),
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
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

ALL_TABLES = (
    icy_locked_treasuries,
    onchain_btc_transactions,
    onchain_icy_transactions,
    onchain_icy_swap_transactions,
    onchain_btc_processed_transactions,
    swap_requests,
    indexer_cursors,
)

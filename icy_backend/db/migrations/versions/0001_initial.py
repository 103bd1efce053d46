"""Initial schema (SPEC §10).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from icy_backend.db.types import Amount, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "icy_locked_treasuries",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("address", sa.String(42), nullable=False),
        *_ts(),
        sa.PrimaryKeyConstraint("id", name="pk_icy_locked_treasuries"),
        sa.UniqueConstraint("address", name="uq_icy_locked_treasuries_address"),
    )
    op.create_table(
        "onchain_btc_transactions",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("transaction_hash", sa.String(64), nullable=False),
        sa.Column("output_index", sa.Integer(), nullable=False),
        sa.Column("block_time", sa.BigInteger(), nullable=True),
        sa.Column("block_height", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("other_address", sa.String(100), nullable=True),
        sa.Column("fee", Amount(), nullable=True),
        *_ts(),
        sa.PrimaryKeyConstraint("id", name="pk_onchain_btc_transactions"),
        sa.UniqueConstraint(
            "transaction_hash",
            "output_index",
            "type",
            name="uq_onchain_btc_transactions_transaction_hash_output_index_type",
        ),
        sa.CheckConstraint("type IN ('in', 'out')", name="ck_onchain_btc_transactions_type"),
    )
    op.create_table(
        "onchain_icy_transactions",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("transaction_hash", sa.String(66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_time", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        *_ts(),
        sa.PrimaryKeyConstraint("id", name="pk_onchain_icy_transactions"),
        sa.UniqueConstraint(
            "transaction_hash", "log_index", name="uq_onchain_icy_transactions_transaction_hash_log_index"
        ),
        sa.CheckConstraint("type IN ('in', 'out', 'transfer')", name="ck_onchain_icy_transactions_type"),
    )
    op.create_table(
        "onchain_icy_swap_transactions",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("transaction_hash", sa.String(66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("icy_amount", Amount(), nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("btc_address", sa.String(100), nullable=False),
        sa.Column("btc_amount", Amount(), nullable=False),
        *_ts(),
        sa.PrimaryKeyConstraint("id", name="pk_onchain_icy_swap_transactions"),
        sa.UniqueConstraint(
            "transaction_hash",
            "log_index",
            name="uq_onchain_icy_swap_transactions_transaction_hash_log_index",
        ),
    )
    op.create_table(
        "onchain_btc_processed_transactions",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("swap_transaction_hash", sa.String(66), nullable=False),
        sa.Column("btc_address", sa.String(100), nullable=False),
        sa.Column("subtotal", Amount(), nullable=False),
        sa.Column("service_fee", Amount(), nullable=False),
        sa.Column("network_fee", Amount(), nullable=True),
        sa.Column("total", Amount(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("btc_transaction_hash", sa.String(64), nullable=True),
        sa.Column("raw_tx", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        *_ts(),
        sa.PrimaryKeyConstraint("id", name="pk_onchain_btc_processed_transactions"),
        sa.UniqueConstraint(
            "swap_transaction_hash", name="uq_onchain_btc_processed_transactions_swap_transaction_hash"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'broadcasting', 'completed', 'failed')",
            name="ck_onchain_btc_processed_transactions_status",
        ),
    )
    op.create_table(
        "swap_requests",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("icy_amount", Amount(), nullable=False),
        sa.Column("btc_address", sa.String(100), nullable=False),
        sa.Column("btc_amount", Amount(), nullable=True),
        sa.Column("icy_tx", sa.String(66), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("evm_tx_hash", sa.String(66), nullable=True),
        sa.Column("signed_tx", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        *_ts(),
        sa.PrimaryKeyConstraint("id", name="pk_swap_requests"),
        sa.UniqueConstraint("icy_tx", name="uq_swap_requests_icy_tx"),
        sa.CheckConstraint("status IN ('pending', 'sending', 'completed', 'failed')", name="ck_swap_requests_status"),
    )
    op.create_table(
        "indexer_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("txid", sa.String(66), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_indexer_cursors"),
    )
    op.create_index("ix_onchain_btc_processed_transactions_status", "onchain_btc_processed_transactions", ["status"])
    op.create_index("ix_swap_requests_status", "swap_requests", ["status"])


def downgrade() -> None:
    op.drop_index("ix_swap_requests_status", table_name="swap_requests")
    op.drop_index("ix_onchain_btc_processed_transactions_status", table_name="onchain_btc_processed_transactions")
    for name in (
        "indexer_cursors",
        "swap_requests",
        "onchain_btc_processed_transactions",
        "onchain_icy_swap_transactions",
        "onchain_icy_transactions",
        "onchain_btc_transactions",
        "icy_locked_treasuries",
    ):
        op.drop_table(name)

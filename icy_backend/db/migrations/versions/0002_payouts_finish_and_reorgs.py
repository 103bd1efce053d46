"""Payouts that finish, per-event payouts, reorg-aware indexers (SPEC §10).

* payouts: statuses ``confirming`` and ``held``; keyed by (swap tx hash, swap event index); ``hold_reason``,
  ``reorged``, ``confirmations``, ``broadcast_at``, ``released_at``;
* ``btc_payout_candidates``: every transaction a payout ever stored before sending it;
* block hashes on the EVM log rows and the cursors, ``indexer_checkpoints``, the Swap event index;
* swap requests: the stored transaction's nonce and signature deadline.

Existing rows are migrated: a payout gets ``swap_event_index`` 0 (it was its transaction's first Swap event), a
payout holding a stored transaction keeps it as its one candidate, a ``completed`` one counts one confirmation,
and each stored Swap row gets its position among its transaction's Swap rows.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from icy_backend.db.types import Amount, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
P = "onchain_btc_processed_transactions"
OLD_STATUSES = "status IN ('pending', 'broadcasting', 'completed', 'failed')"
NEW_STATUSES = "status IN ('pending', 'broadcasting', 'confirming', 'completed', 'held', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table(P) as batch:
        batch.add_column(sa.Column("swap_event_index", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("hold_reason", sa.String(64), nullable=True))
        batch.add_column(sa.Column("reorged", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("confirmations", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("broadcast_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("released_at", UTCDateTime(), nullable=True))
        batch.drop_constraint("uq_onchain_btc_processed_transactions_swap_transaction_hash", type_="unique")
        batch.create_unique_constraint(
            "uq_payouts_swap_event",
            ["swap_transaction_hash", "swap_event_index"],
        )
        batch.drop_constraint("ck_onchain_btc_processed_transactions_status", type_="check")
        batch.create_check_constraint("ck_onchain_btc_processed_transactions_status", NEW_STATUSES)

    op.create_table(
        "btc_payout_candidates",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("payout_id", PK, nullable=False),
        sa.Column("txid", sa.String(64), nullable=False),
        sa.Column("raw_tx", sa.Text(), nullable=False),
        sa.Column("fee", Amount(), nullable=False),
        sa.Column("fee_rate", sa.String(32), nullable=False),
        sa.Column("broadcast_height", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_btc_payout_candidates"),
        sa.ForeignKeyConstraint(
            ["payout_id"],
            [f"{P}.id"],
            name="fk_btc_payout_candidates_payout",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("txid", name="uq_btc_payout_candidates_txid"),
        sa.CheckConstraint("status IN ('active', 'replaced', 'dead')", name="ck_btc_payout_candidates_status"),
    )
    op.create_index("ix_btc_payout_candidates_payout_id", "btc_payout_candidates", ["payout_id"])

    for table in ("onchain_icy_transactions", "onchain_icy_swap_transactions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("block_hash", sa.String(66), nullable=True))
    with op.batch_alter_table("onchain_icy_swap_transactions") as batch:
        batch.add_column(sa.Column("event_index", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("indexer_cursors") as batch:
        batch.add_column(sa.Column("block_hash", sa.String(66), nullable=True))
    op.create_table(
        "indexer_checkpoints",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.PrimaryKeyConstraint("name", "block_number", name="pk_indexer_checkpoints"),
    )
    with op.batch_alter_table("swap_requests") as batch:
        batch.add_column(sa.Column("evm_nonce", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("signature_deadline", sa.BigInteger(), nullable=True))

    _migrate_rows()


def _migrate_rows() -> None:
    bind = op.get_bind()
    payouts = sa.table(
        P,
        sa.column("id", PK),
        sa.column("status", sa.String()),
        sa.column("btc_transaction_hash", sa.String()),
        sa.column("raw_tx", sa.Text()),
        sa.column("network_fee", Amount()),
        sa.column("updated_at", UTCDateTime()),
        sa.column("broadcast_at", UTCDateTime()),
        sa.column("confirmations", sa.Integer()),
    )
    candidates = sa.table(
        "btc_payout_candidates",
        sa.column("payout_id", PK),
        sa.column("txid", sa.String()),
        sa.column("raw_tx", sa.Text()),
        sa.column("fee", Amount()),
        sa.column("fee_rate", sa.String()),
        sa.column("status", sa.String()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    now = datetime.now(UTC)
    rows = bind.execute(
        sa.select(
            payouts.c.id,
            payouts.c.status,
            payouts.c.btc_transaction_hash,
            payouts.c.raw_tx,
            payouts.c.network_fee,
            payouts.c.updated_at,
        )
        .where(payouts.c.raw_tx.is_not(None), payouts.c.btc_transaction_hash.is_not(None))
        .where(payouts.c.status.in_(["broadcasting", "completed"]))
        .order_by(payouts.c.id)
    ).all()
    for row in rows:
        bind.execute(
            candidates.insert().values(
                payout_id=row.id,
                txid=row.btc_transaction_hash,
                raw_tx=row.raw_tx,
                fee=int(row.network_fee or 0),
                fee_rate="0",
                status="active",
                created_at=row.updated_at or now,
                updated_at=now,
            )
        )
        values: dict[str, object] = {"broadcast_at": row.updated_at or now}
        if row.status == "completed":
            values["confirmations"] = 1
        bind.execute(sa.update(payouts).where(payouts.c.id == row.id).values(**values))

    swaps = sa.table(
        "onchain_icy_swap_transactions",
        sa.column("id", PK),
        sa.column("transaction_hash", sa.String()),
        sa.column("log_index", sa.Integer()),
        sa.column("event_index", sa.Integer()),
    )
    position: dict[str, int] = {}
    for swap in bind.execute(
        sa.select(swaps.c.id, swaps.c.transaction_hash).order_by(swaps.c.transaction_hash, swaps.c.log_index)
    ).all():
        index = position.get(swap.transaction_hash, 0)
        position[swap.transaction_hash] = index + 1
        if index:
            bind.execute(sa.update(swaps).where(swaps.c.id == swap.id).values(event_index=index))


def downgrade() -> None:
    with op.batch_alter_table("swap_requests") as batch:
        batch.drop_column("signature_deadline")
        batch.drop_column("evm_nonce")
    op.drop_table("indexer_checkpoints")
    with op.batch_alter_table("indexer_cursors") as batch:
        batch.drop_column("block_hash")
    with op.batch_alter_table("onchain_icy_swap_transactions") as batch:
        batch.drop_column("event_index")
    for table in ("onchain_icy_swap_transactions", "onchain_icy_transactions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("block_hash")
    op.drop_index("ix_btc_payout_candidates_payout_id", table_name="btc_payout_candidates")
    op.drop_table("btc_payout_candidates")
    # Rows in the new states have no place in the old schema: keep them visible as the nearest old state.
    status = sa.table(P, sa.column("status", sa.String()))
    op.execute(sa.update(status).where(status.c.status == "confirming").values(status="broadcasting"))
    op.execute(sa.update(status).where(status.c.status == "held").values(status="pending"))
    with op.batch_alter_table(P) as batch:
        batch.drop_constraint("ck_onchain_btc_processed_transactions_status", type_="check")
        batch.create_check_constraint("ck_onchain_btc_processed_transactions_status", OLD_STATUSES)
        batch.drop_constraint("uq_payouts_swap_event", type_="unique")
        batch.create_unique_constraint(
            "uq_onchain_btc_processed_transactions_swap_transaction_hash", ["swap_transaction_hash"]
        )
        for column in ("released_at", "broadcast_at", "confirmations", "reorged", "hold_reason", "swap_event_index"):
            batch.drop_column(column)

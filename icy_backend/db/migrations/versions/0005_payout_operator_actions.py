"""Operator actions on payouts: who released, rejected or held which payout, when and why (SPEC §3 payouts).

``payout_operator_actions``: one row per move made with ``icy-backend payouts release|reject|hold``, written in
the same transaction as the compare-and-set move, so the record exists exactly when the move does. No foreign key:
the record outlives a payout that a reorg deletes. Refused moves are only logged.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from icy_backend.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payout_operator_actions",
        sa.Column("id", PK, autoincrement=True),
        sa.Column("payout_id", PK, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_status", sa.String(16), nullable=False),
        sa.Column("new_status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payout_operator_actions"),
    )
    op.create_index("ix_payout_operator_actions_payout_id", "payout_operator_actions", ["payout_id"])


def downgrade() -> None:
    op.drop_index("ix_payout_operator_actions_payout_id", table_name="payout_operator_actions")
    op.drop_table("payout_operator_actions")

"""Payouts remember the block at which a reorg took their Swap event away (SPEC §9 reorgs).

``reorged_at_block``: the fork point (newest still-canonical checkpoint) of the reorg that flagged the payout
``reorged``; NULL otherwise. A ``reorged`` payout whose event has not re-appeared once the Swap indexer is more
than ``BLOCKCHAIN_REORG_DEPTH_MAX`` blocks past it pages. Existing rows are not reorged: NULL.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

P = "onchain_btc_processed_transactions"


def upgrade() -> None:
    with op.batch_alter_table(P) as batch:
        batch.add_column(sa.Column("reorged_at_block", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(P) as batch:
        batch.drop_column("reorged_at_block")

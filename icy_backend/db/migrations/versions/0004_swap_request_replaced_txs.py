"""Swap requests remember the transactions a same-nonce replacement superseded (SPEC §9 swap requests).

``replaced_tx_hashes``: space-separated hashes of the earlier transactions of the request, all at its
``evm_nonce``. Any of them may still be the one that gets mined, so the request is decided on the receipts of all
of them, and it never goes back to ``pending`` while one of them might be mined. Existing rows were never
replaced: NULL.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("swap_requests") as batch:
        batch.add_column(sa.Column("replaced_tx_hashes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("swap_requests") as batch:
        batch.drop_column("replaced_tx_hashes")

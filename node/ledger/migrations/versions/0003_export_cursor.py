"""The export cursor: how far the cluster's outbox has been applied to this database
(bookkeeping of node/ledger/export.py, advanced with the rows it applies).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_export_cursor",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_ledger_export_cursor")),
    )


def downgrade() -> None:
    op.drop_table("ledger_export_cursor")

"""Cancelled orders: a payment that lands for one of them is released, never kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payment"


def upgrade() -> None:
    op.create_table(
        "cancelled_orders",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column(
            "cancelled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("cancelled_orders", schema=SCHEMA)

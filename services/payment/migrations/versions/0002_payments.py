"""Payments and the ledger of their PSP operations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payment"


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.Uuid, primary_key=True),
        sa.Column("order_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("payment_method", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("authorized", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("captured", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refunded", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("psp_intent_id", sa.Text),
        sa.Column("failure_code", sa.Text),
        sa.Column("capture_before", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "captured <= authorized AND refunded <= captured AND authorized <= amount",
            name="payment_amounts_in_order",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "payment_operations",
        sa.Column("operation_id", sa.Uuid, primary_key=True),
        sa.Column(
            "payment_id", sa.Uuid, sa.ForeignKey(f"{SCHEMA}.payments.payment_id"), nullable=False
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("request_key", sa.Text, nullable=False),
        sa.Column("failure_code", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("payment_id", "kind", "request_key", name="operation_per_request"),
        schema=SCHEMA,
    )
    # Reconciliation's scan: operations whose outcome is still open.
    op.create_index(
        "payment_operations_open",
        "payment_operations",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("state IN ('PENDING', 'UNKNOWN')"),
    )


def downgrade() -> None:
    op.drop_table("payment_operations", schema=SCHEMA)
    op.drop_table("payments", schema=SCHEMA)

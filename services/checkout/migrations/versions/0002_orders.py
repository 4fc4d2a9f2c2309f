"""Orders with their lines and shipments, and PlaceOrder's idempotency records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "checkout"


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("cart_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("failure_detail", sa.Text, nullable=False, server_default=""),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("subtotal", sa.BigInteger, nullable=False),
        sa.Column("tax", sa.BigInteger),
        sa.Column("shipping_address", JSONB, nullable=False),
        sa.Column("payment_method", sa.Text, nullable=False),
        sa.Column("fraud_decision", sa.Text),
        sa.Column("fraud_score", sa.Integer),
        sa.Column("fraud_reason", sa.Text),
        sa.Column("reservation_id", sa.Uuid),
        sa.Column("payment_id", sa.Uuid),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("saga_started_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "subtotal >= 0 AND (tax IS NULL OR tax >= 0)", name="order_money_positive"
        ),
        schema=SCHEMA,
    )
    # ListOrders, when order ids were UUIDv7 (time-ordered); 0005 replaces it by placement time.
    op.create_index("orders_by_customer", "orders", ["customer_id", "order_id"], schema=SCHEMA)
    # The completer's and the timeout sweep's scan: only PENDING orders.
    op.create_index(
        "orders_pending",
        "orders",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_table(
        "order_lines",
        sa.Column(
            "order_id", sa.Uuid, sa.ForeignKey(f"{SCHEMA}.orders.order_id"), primary_key=True
        ),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("sku", sa.Text, nullable=False),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.BigInteger, nullable=False),
        sa.CheckConstraint("quantity > 0 AND unit_price >= 0", name="order_line_positive"),
        schema=SCHEMA,
    )
    op.create_table(
        "order_shipments",
        sa.Column("shipment_id", sa.Uuid, primary_key=True),
        sa.Column(
            "order_id",
            sa.Uuid,
            sa.ForeignKey(f"{SCHEMA}.orders.order_id"),
            nullable=False,
            index=True,
        ),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("carrier", sa.Text, nullable=False, server_default=""),
        sa.Column("tracking_number", sa.Text, nullable=False, server_default=""),
        sa.Column("shipped_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response", JSONB),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    # The reaper's scan: oldest keys first.
    op.create_index("idempotency_keys_created", "idempotency_keys", ["created_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("idempotency_keys", schema=SCHEMA)
    op.drop_table("order_shipments", schema=SCHEMA)
    op.drop_table("order_lines", schema=SCHEMA)
    op.drop_table("orders", schema=SCHEMA)

"""The catalog, carts and their lines, idempotency keys, and pending cache invalidations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "cart"


def _timestamp(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("price_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("listed", sa.Boolean, nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("price_minor >= 0", name="product_price_not_negative"),
        schema=SCHEMA,
    )
    op.create_table(
        "carts",
        sa.Column("cart_id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("order_id", sa.Uuid, unique=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        schema=SCHEMA,
    )
    op.create_index("carts_by_customer", "carts", ["customer_id"], schema=SCHEMA)
    op.create_table(
        "cart_lines",
        sa.Column("cart_id", sa.Uuid, sa.ForeignKey(f"{SCHEMA}.carts.cart_id"), primary_key=True),
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.CheckConstraint("quantity BETWEEN 1 AND 1000", name="cart_line_quantity"),
        schema=SCHEMA,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("response", sa.Text),
        _timestamp("created_at"),
        schema=SCHEMA,
    )
    op.create_table(
        "cache_invalidations",
        sa.Column("cart_id", sa.Uuid, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        _timestamp("recorded_at"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("cache_invalidations", "idempotency_keys", "cart_lines", "carts", "products"):
        op.drop_table(table, schema=SCHEMA)

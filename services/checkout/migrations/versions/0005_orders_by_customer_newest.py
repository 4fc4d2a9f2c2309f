"""A customer's orders by placement time: the index ListOrders reads.

Order ids are derived from the purchase (services.checkout.domain.idempotency.order_id_for)
and carry no time, so ListOrders pages a customer's orders by (created_at, order_id), newest
first. The index on (customer_id, order_id) that served the old order no longer does; this one
serves both the first page and the pages after a token, without a sort.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "checkout"


def upgrade() -> None:
    op.create_index(
        "orders_by_customer_newest",
        "orders",
        ["customer_id", "created_at", "order_id"],
        schema=SCHEMA,
    )
    op.drop_index("orders_by_customer", table_name="orders", schema=SCHEMA)


def downgrade() -> None:
    op.create_index("orders_by_customer", "orders", ["customer_id", "order_id"], schema=SCHEMA)
    op.drop_index("orders_by_customer_newest", table_name="orders", schema=SCHEMA)

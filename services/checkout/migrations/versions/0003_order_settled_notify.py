"""A NOTIFY when an order leaves PENDING, for callers waiting on it (GetOrder's `wait`).

An AFTER UPDATE trigger on checkout.orders queues `pg_notify('checkout_order_settled',
<order id>)` when the status changes from PENDING to anything else. The trigger keeps the
notification in the transaction that settles the order (sent when it commits, never for a
rollback) and adds no statement to any use case. The channel's name is
services.checkout.adapters.settlements.SETTLED_CHANNEL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "checkout"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.notify_order_settled() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('checkout_order_settled', NEW.order_id::text);
            RETURN NULL;
        END
        $$
        """
    )
    # No column list (UPDATE OF status): whatever form the UPDATE takes, the WHEN decides.
    op.execute(
        f"""
        CREATE TRIGGER order_settled
        AFTER UPDATE ON {SCHEMA}.orders
        FOR EACH ROW
        WHEN (OLD.status = 'PENDING' AND NEW.status IS DISTINCT FROM 'PENDING')
        EXECUTE FUNCTION {SCHEMA}.notify_order_settled()
        """
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER IF EXISTS order_settled ON {SCHEMA}.orders")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.notify_order_settled()")

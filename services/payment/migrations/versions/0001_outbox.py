"""The payment schema's outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from marketplace_platform.migration_ops import create_outbox_v1

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_v1("payment")


def downgrade() -> None:
    from alembic import op

    op.drop_table("outbox", schema="payment")

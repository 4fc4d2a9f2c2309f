"""The analytics consumer's record of the objects it wrote for facts not yet committed.

`consumers.analytics_written (fact_id, object_key)`: a row is committed, in its own
transaction, before the object holding the fact is written, and deleted in the transaction
that commits the fact's inbox row. A row still there names an object written (or being
written) by an attempt that did not commit; a redelivery finds it and does not write the fact
again (workers/consumers/analytics/sink.py). Fenced like every table of the schema.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace_platform.migration_ops import fence_tables_v1

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "consumers"


def upgrade() -> None:
    op.create_table(
        "analytics_written",
        sa.Column("fact_id", sa.Uuid, primary_key=True),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column(
            "written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    fence_tables_v1(SCHEMA)


def downgrade() -> None:
    op.drop_table("analytics_written", schema=SCHEMA)

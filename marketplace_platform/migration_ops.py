"""Schema operations shared by several services' migrations.

Migrations are history: once released, a function here never changes; a new shape gets a new
function (`..._v2`) and a new migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_outbox_v1(schema: str) -> None:
    """Create `<schema>.outbox` as `marketplace_platform.outbox.define_outbox_table` describes."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("aggregate_type", sa.Text, nullable=False),
        sa.Column("aggregate_id", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        schema=schema,
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )

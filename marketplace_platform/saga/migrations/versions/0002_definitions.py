"""The definitions executions are begun on, by digest, so a deploy does not change them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "saga"


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("digest", sa.Text, primary_key=True),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column(
            "stored_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("definitions", schema=SCHEMA)

"""The W3C traceparent of the call that started an execution, so its states join that trace.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "saga"


def upgrade() -> None:
    op.add_column("executions", sa.Column("traceparent", sa.Text), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("executions", "traceparent", schema=SCHEMA)

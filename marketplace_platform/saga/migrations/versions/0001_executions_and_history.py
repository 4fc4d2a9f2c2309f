"""Saga executions and their append-only history.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "saga"


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("state_machine", sa.Text, nullable=False),
        sa.Column("definition_digest", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("input", JSONB, nullable=False),
        sa.Column("output", JSONB),
        sa.Column("error", sa.Text),
        sa.Column("cause", sa.Text),
        sa.Column("current_state", sa.Text),
        sa.Column("state_input", JSONB),
        sa.Column("state_memo", JSONB),
        sa.Column("state_entered_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
        sa.Column("deadline", sa.DateTime(timezone=True)),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_token", sa.Uuid),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.UniqueConstraint("name", name="executions_name_key"),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'TIMED_OUT')",
            name="execution_status_known",
        ),
        schema=SCHEMA,
    )
    # Runners look for due, open executions; finished ones stay out of the index.
    op.create_index(
        "executions_runnable",
        "executions",
        ["state_machine", "next_run_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'RUNNING'"),
    )
    op.create_table(
        "history",
        sa.Column(
            "execution_id",
            sa.Uuid,
            sa.ForeignKey(f"{SCHEMA}.executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("state", sa.Text),
        sa.Column("payload", JSONB),
        sa.Column("owner", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("history", schema=SCHEMA)
    op.drop_table("executions", schema=SCHEMA)

"""The local queues' messages table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "queues"


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("message_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("visible_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("receive_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("receipt_token", sa.Uuid),
        sa.Column("dead_from", sa.Text),
        schema=SCHEMA,
    )
    op.create_index("messages_ready", "messages", ["queue", "visible_at", "id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("messages", schema=SCHEMA)

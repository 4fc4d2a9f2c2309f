"""The local queues' table in its own `queues` schema: every message of every queue."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA = "queues"

metadata = sa.MetaData(schema=SCHEMA)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("message_id", sa.Uuid, nullable=False, unique=True),
    # The queue it is on now; a dead letter moves to the DLQ's name, keeping its id.
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("visible_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("receive_count", sa.Integer, nullable=False, server_default="0"),
    # Changes on every receive, so only the latest receiver's handle deletes the message.
    sa.Column("receipt_token", sa.Uuid),
    # Where a dead letter came from, for redrive.
    sa.Column("dead_from", sa.Text),
    sa.Index("messages_ready", "queue", "visible_at", "id"),
)

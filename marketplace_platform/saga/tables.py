"""The saga engine's tables in its own `saga` schema: executions, their append-only history,
and the definitions they run on."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "saga"

metadata = sa.MetaData(schema=SCHEMA)

STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT")

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("state_machine", sa.Text, nullable=False),
    # The definition it runs on, pinned by the runner that begins it (a row of `definitions`):
    # every later step interprets that one, whatever definition the engines have now.
    sa.Column("definition_digest", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("input", JSONB, nullable=False),
    # The W3C traceparent of the call that started it (null when that call was not traced).
    sa.Column("traceparent", sa.Text),
    sa.Column("output", JSONB),
    sa.Column("error", sa.Text),
    sa.Column("cause", sa.Text),
    # Where it stands: NULL before the first runner picks it up.
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
    sa.CheckConstraint(f"status IN {STATUSES}", name="execution_status_known"),
)

history = sa.Table(
    "history",
    metadata,
    sa.Column(
        "execution_id",
        sa.Uuid,
        sa.ForeignKey(executions.c.id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("state", sa.Text),
    sa.Column("payload", JSONB),
    sa.Column("owner", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# Every definition an execution was begun on, by digest. Rows are never changed or deleted:
# an execution in flight over a deploy finishes on its own. No foreign key from executions,
# since executions begun before this table existed have digests that were never stored.
definitions = sa.Table(
    "definitions",
    metadata,
    sa.Column("digest", sa.Text, primary_key=True),
    # StateMachine.canonical: the exact text the digest is taken over.
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column(
        "stored_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

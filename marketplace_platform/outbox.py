"""The transactional outbox: events written in the same transaction as the state they describe.

Each service owns an `outbox` table in its own schema; the relay (a worker) publishes rows in
id order and marks them published.

Waking the relay: the first outbox row of a transaction queues a NOTIFY on `OUTBOX_CHANNEL`
(payload: the schema) in its own INSERT statement, so an idle relay wakes when the transaction
commits; later rows of the transaction add none. A notifying commit holds a server-wide lock
until it is flushed (8 connections committing one-row inserts: about 2-3x fewer commits per
second when each notifies), so the row notifies only when the relay may be idle: when the
oldest unpublished row of the schema, if any, is older than `RELAY_BUSY_SECONDS`. A relay that
is working keeps the oldest row young and goes round again after every productive pass; a row
it missed ages past the mark, and the next row written wakes it (its fallback poll finds rows
nobody follows).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Identity,
    Index,
    Insert,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    case,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.ids import new_id
from marketplace_platform.validation import field_violations

# The relay LISTENs here; a notification's payload is the schema whose outbox got a row.
OUTBOX_CHANNEL = "outbox"
# An unpublished row younger than this says a relay is on the outbox: no NOTIFY needed.
RELAY_BUSY_SECONDS = 0.2
# session.info key: the transaction that already queued its NOTIFY.
_NOTIFIED_IN = "outbox_notified_in"


def define_outbox_table(metadata: MetaData) -> Table:
    """The outbox table in metadata's schema: one row per event, in publish order."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("event_type", Text, nullable=False),
        Column("aggregate_type", Text, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("published_at", DateTime(timezone=True)),
        Index(
            "outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
    )


class OutboxWriter:
    """Builds event envelopes (with the current trace context) and inserts them as rows."""

    def __init__(self, table: Table, *, producer: str) -> None:
        self.table = table
        self.producer = producer

    def envelope(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Wrap a payload in the event envelope every consumer reads."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        envelope = envelope_pb2.EventEnvelope(
            event_id=str(new_id()),
            event_type=payload.DESCRIPTOR.full_name,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            producer=self.producer,
        )
        if "traceparent" in carrier:
            envelope.trace_context.traceparent = carrier["traceparent"]
            envelope.trace_context.tracestate = carrier.get("tracestate", "")
        envelope.occurred_at.FromDatetime(datetime.now(UTC))
        packed = any_pb2.Any()
        packed.Pack(payload)
        envelope.payload.CopyFrom(packed)
        return envelope

    async def add(
        self, session: AsyncSession, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Insert the event into the outbox within the session's transaction."""
        envelope = self.envelope(payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id)
        # A malformed event is our bug, not the caller's: fail the transaction loudly.
        broken = field_violations(payload) + field_violations(envelope)
        if broken:
            raise ValueError(f"refusing to write a malformed {envelope.event_type}: {broken}")
        values = {
            "event_id": envelope.event_id,
            "event_type": envelope.event_type,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "occurred_at": envelope.occurred_at.ToDatetime(tzinfo=UTC),
            "envelope": envelope.SerializeToString(),
        }
        transaction = session.get_transaction()
        if transaction is not None and session.info.get(_NOTIFIED_IN) is transaction:
            await session.execute(self.table.insert().values(**values))
            return envelope
        await session.execute(self._insert_notifying(values))
        session.info[_NOTIFIED_IN] = transaction
        return envelope

    def _insert_notifying(self, values: dict[str, object]) -> Insert:
        """The row's INSERT ... SELECT from a one-row CTE that queues the relay's NOTIFY unless
        a relay is busy on the outbox (a CTE that is not selected from would not run)."""
        oldest = (
            select(self.table.c.occurred_at)
            .where(self.table.c.published_at.is_(None))
            .order_by(self.table.c.id)
            .limit(1)
            .scalar_subquery()
        )
        milliseconds = round(RELAY_BUSY_SECONDS * 1000)
        busy_for: ColumnElement[Any] = literal_column(f"interval '{milliseconds} milliseconds'")
        idle = func.coalesce(oldest, literal_column("'-infinity'::timestamptz")) < (
            func.now() - busy_for
        )
        channel, payload = OUTBOX_CHANNEL, self.table.schema or "public"
        notified = select(case((idle, func.pg_notify(channel, payload))).label("notified"))
        row = select(
            *(literal(value, self.table.c[name].type) for name, value in values.items())
        ).select_from(notified.cte("notified"))
        return self.table.insert().from_select(list(values), row)

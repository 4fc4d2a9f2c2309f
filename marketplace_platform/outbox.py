"""The transactional outbox: events written in the same transaction as the state they describe.

Each service owns an `outbox` table in its own schema; the relay (a worker) publishes rows in
id order and marks them published.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import any_pb2
from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.ids import new_id
from marketplace_platform.validation import field_violations


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
        await session.execute(
            self.table.insert().values(
                event_id=envelope.event_id,
                event_type=envelope.event_type,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
                envelope=envelope.SerializeToString(),
            )
        )
        return envelope

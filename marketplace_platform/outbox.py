"""The transactional outbox: events written in the same transaction as the state they describe.

Each service owns an `outbox` table in its own schema; the relay (a worker) publishes rows in
id order and marks them published.

A unit of work writes the events of its transaction together, in one INSERT just before it
commits (`write`: one row per event, ids in publish order, so the relay publishes them in that
order); `add` writes one event at once.

Waking the relay: the first outbox INSERT of a transaction queues a NOTIFY on `OUTBOX_CHANNEL`
(payload: the schema) in that same statement, so an idle relay wakes when the transaction
commits; later inserts of the transaction add none. A notifying commit holds a server-wide lock
until it is flushed (8 connections committing one-row inserts: about 2-3x fewer commits per
second when each notifies), so the row notifies only when the relay may be idle: when the
oldest unpublished row of the schema, if any, is older than `RELAY_BUSY_SECONDS`. A relay that
is working keeps the oldest row young and goes round again after every productive pass; a row
it missed ages past the mark, and the next row written wakes it (its fallback poll finds rows
nobody follows).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import (
    CTE,
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
    bindparam,
    case,
    func,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

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


# An outbox row's columns a writer fills (the id is the table's identity, in insert order).
_ROW = ("event_id", "event_type", "aggregate_type", "aggregate_id", "occurred_at", "envelope")


class OutboxWriter:
    """Builds event envelopes (with the current trace context) and inserts them as rows."""

    def __init__(
        self, table: Table, *, producer: str, busy_seconds: float = RELAY_BUSY_SECONDS
    ) -> None:
        self.table = table
        self.producer = producer
        self._busy_seconds = busy_seconds  # a younger oldest unpublished row: no NOTIFY
        self._insert = self._insert_rows(notifying=False)
        self._insert_notifying = self._insert_rows(notifying=True)

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

    def checked_envelope(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """The event's envelope, refusing (ValueError) an event or envelope that breaks its
        contract's field rules."""
        envelope = self.envelope(payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id)
        # A malformed event is our bug, not the caller's: fail the transaction loudly.
        broken = field_violations(payload) + field_violations(envelope)
        if broken:
            raise ValueError(f"refusing to write a malformed {envelope.event_type}: {broken}")
        return envelope

    async def add(
        self, session: AsyncSession, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Insert the event into the outbox within the session's transaction, now."""
        envelope = self.checked_envelope(
            payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id
        )
        await self.write(session, [envelope])
        return envelope

    async def write(
        self, session: AsyncSession, envelopes: Sequence[envelope_pb2.EventEnvelope]
    ) -> None:
        """Insert the envelopes (checked ones) within the session's transaction, in one
        statement, their ids in the order given; the transaction's first insert also queues
        the relay's NOTIFY."""
        if not envelopes:
            return
        rows = {
            "event_id": [uuid.UUID(e.event_id) for e in envelopes],
            "event_type": [e.event_type for e in envelopes],
            "aggregate_type": [e.aggregate_type for e in envelopes],
            "aggregate_id": [e.aggregate_id for e in envelopes],
            "occurred_at": [e.occurred_at.ToDatetime(tzinfo=UTC) for e in envelopes],
            "envelope": [e.SerializeToString() for e in envelopes],
        }
        transaction = session.get_transaction()
        if transaction is not None and session.info.get(_NOTIFIED_IN) is transaction:
            await session.execute(self._insert, rows)
            return
        await session.execute(self._insert_notifying, rows)
        session.info[_NOTIFIED_IN] = transaction

    def _insert_rows(self, *, notifying: bool) -> Insert:
        """The INSERT of the rows bound as one array per column (one statement, built once,
        whatever their number), in their order in the arrays; when `notifying`, selected with
        a one-row CTE that queues the relay's NOTIFY unless a relay is busy on the outbox (a
        CTE that is not selected from would not run)."""
        arrays = [bindparam(name, type_=postgresql.ARRAY(self.table.c[name].type)) for name in _ROW]
        rows = (
            func.unnest(*arrays)
            .table_valued(*_ROW, with_ordinality="position")
            .render_derived(name="rows")
        )
        selected = select(*(rows.c[name] for name in _ROW)).order_by(rows.c.position)
        if notifying:
            selected = selected.select_from(rows.join(self._notified(), true()))
        return self.table.insert().from_select(list(_ROW), selected)

    def _notified(self) -> CTE:
        """A one-row CTE that queues the relay's NOTIFY unless a relay is busy on the outbox:
        the oldest unpublished row, if any, is younger than `busy_seconds`."""
        oldest = (
            select(self.table.c.occurred_at)
            .where(self.table.c.published_at.is_(None))
            .order_by(self.table.c.id)
            .limit(1)
            .scalar_subquery()
        )
        milliseconds = round(self._busy_seconds * 1000)
        busy_for: ColumnElement[Any] = literal_column(f"interval '{milliseconds} milliseconds'")
        idle = func.coalesce(oldest, literal_column("'-infinity'::timestamptz")) < (
            func.now() - busy_for
        )
        channel, payload = OUTBOX_CHANNEL, self.table.schema or "public"
        return select(case((idle, func.pg_notify(channel, payload))).label("notified")).cte(
            "notified"
        )


# -- the backlog, as the relay's gauges, its CLI, the queue tool and the console read it --

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

_DISCOVER = text(
    "SELECT table_schema FROM information_schema.tables"
    " WHERE table_name = 'outbox' AND table_type = 'BASE TABLE' ORDER BY table_schema"
)


@dataclass(frozen=True)
class OutboxLag:
    """One schema's backlog: unpublished rows and the age of the oldest."""

    schema: str
    unpublished: int
    oldest_age_seconds: float | None


def checked_schema(schema: str) -> str:
    """`schema`, refused (ValueError) unless a plain lowercase name that is safe to quote."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    return schema


async def outbox_schemas(engine: AsyncEngine) -> list[str]:
    """Every schema in the database that has an outbox table."""
    async with engine.connect() as connection:
        rows = (await connection.execute(_DISCOVER)).scalars().all()
    return [str(schema) for schema in rows if _SCHEMA_NAME.match(str(schema))]


async def outbox_lag(engine: AsyncEngine, schemas: Sequence[str] | None = None) -> list[OutboxLag]:
    """The backlog of each schema's outbox (every outbox schema when none are named)."""
    names = list(schemas) if schemas else await outbox_schemas(engine)
    lags: list[OutboxLag] = []
    async with engine.connect() as connection:
        for schema in names:
            row = (
                await connection.execute(
                    text(
                        "SELECT count(*) AS unpublished,"
                        " extract(epoch FROM clock_timestamp() - min(occurred_at)) AS age"
                        f' FROM "{checked_schema(schema)}".outbox WHERE published_at IS NULL'
                    )
                )
            ).one()
            age = None if row.age is None else max(0.0, float(row.age))
            lags.append(OutboxLag(schema, int(row.unpublished), age))
    return lags

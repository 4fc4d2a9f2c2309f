"""A consumer: handlers by event type, run once per event through the inbox.

`process` is the whole delivery of one event: it continues the producer's trace from the
envelope, claims (consumer, event_id) in the inbox and runs the handler in the SAME unit of
work, so the consumer's own database effect commits together with its inbox row. Effects
outside the database (files, S3, gRPC calls) happen inside that transaction too and must be
idempotent themselves (deterministic keys, idempotency keys from the event's ids): a process
that dies before the commit repeats them on redelivery, which then changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from google.protobuf.message import Message
from opentelemetry import propagate, trace

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.db import UnitOfWork
from marketplace_platform.event_bus import trace_carrier, unpack_payload
from workers.consumers import inbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveredEvent:
    """An event as a consumer receives it: the envelope and its unpacked payload."""

    envelope: envelope_pb2.EventEnvelope
    payload: Message

    @property
    def event_id(self) -> uuid.UUID:
        """The producer-assigned id that redeliveries keep."""
        return uuid.UUID(self.envelope.event_id)

    @property
    def event_type(self) -> str:
        """The payload's full message name."""
        return self.envelope.event_type

    @property
    def occurred_at(self) -> datetime:
        """When the producer's transaction wrote the event."""
        return self.envelope.occurred_at.ToDatetime(tzinfo=UTC)


Handler = Callable[[DeliveredEvent, UnitOfWork], Awaitable[None]]


@dataclass(frozen=True)
class Consumer:
    """A named consumer (its inbox key) and its handler per event type."""

    name: str
    handlers: Mapping[str, Handler]


class Outcome(StrEnum):
    """What delivering one event did."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


def event_name(event_type: str) -> str:
    """The short name of an event type: marketplace.events.v1.OrderPlaced -> OrderPlaced."""
    return event_type.rsplit(".", 1)[-1]


async def process(
    consumer: Consumer,
    envelope: envelope_pb2.EventEnvelope,
    unit_of_work: Callable[[], UnitOfWork],
    *,
    tracer: trace.Tracer | None = None,
) -> Outcome:
    """Handle one delivered event at most once per (consumer, event_id); raise to retry it."""
    tracer = tracer or trace.get_tracer(__name__)
    parent = propagate.extract(trace_carrier(envelope))
    with tracer.start_as_current_span(
        f"{consumer.name} consume {event_name(envelope.event_type)}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.consumer.group.name": consumer.name,
            "messaging.message.id": envelope.event_id,
            "marketplace.event_type": envelope.event_type,
            "marketplace.aggregate_id": envelope.aggregate_id,
        },
    ) as span:
        handler = consumer.handlers.get(envelope.event_type)
        if handler is None:
            span.set_attribute("marketplace.outcome", Outcome.IGNORED.value)
            return Outcome.IGNORED
        event = DeliveredEvent(envelope, unpack_payload(envelope))
        async with unit_of_work() as uow:
            claimed = await inbox.claim(
                uow.session,
                consumer=consumer.name,
                event_id=event.event_id,
                event_type=event.event_type,
            )
            if claimed:
                await handler(event, uow)
        outcome = Outcome.HANDLED if claimed else Outcome.DUPLICATE
        span.set_attribute("marketplace.outcome", outcome.value)
        log.info(
            "%s %s %s %s",
            consumer.name,
            outcome.value,
            event_name(event.event_type),
            event.event_id,
            extra={"event_id": str(event.event_id), "aggregate_id": envelope.aggregate_id},
        )
        return outcome

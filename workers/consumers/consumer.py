"""A consumer: handlers by event type, run once per event through the inbox.

`process` is the whole delivery of one event: it continues the producer's trace from the
envelope, claims (consumer, event_id) in the inbox and runs the handler in the SAME unit of
work, so the consumer's own database effect commits together with its inbox row. Effects
outside the database (files, S3, gRPC calls) happen inside that transaction too and must be
idempotent themselves (deterministic keys, idempotency keys from the event's ids): a process
that dies before the commit repeats them on redelivery, which then changes nothing.

`process_batch` delivers several events in ONE unit of work: one inbox claim for all of them,
the handler of each event claimed now, then the caller's settlement of the batch's messages,
all committed together; an event already in the inbox is skipped. A failure of any of it
commits nothing, and the caller delivers the batch's events one by one with `process`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
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
BatchHandler = Callable[[Sequence[DeliveredEvent], UnitOfWork], Awaitable[None]]
Settle = Callable[[UnitOfWork], Awaitable[None]]


@dataclass(frozen=True)
class Consumer:
    """A named consumer (its inbox key) and its handler per event type.

    `handle_batch`, when set, handles the events of a delivery at once in their unit of work
    (a sink that appends them together) in place of calling their handlers one by one; it is
    given only events of the types in `handlers`.
    """

    name: str
    handlers: Mapping[str, Handler]
    handle_batch: BatchHandler | None = None


class Outcome(StrEnum):
    """What delivering one event did."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


def event_name(event_type: str) -> str:
    """The short name of an event type: marketplace.events.v1.OrderPlaced -> OrderPlaced."""
    return event_type.rsplit(".", 1)[-1]


@contextlib.contextmanager
def _consume_span(
    tracer: trace.Tracer, consumer: Consumer, envelope: envelope_pb2.EventEnvelope
) -> Iterator[trace.Span]:
    """The consumer span of one event, continuing the producer's trace from the envelope."""
    with tracer.start_as_current_span(
        f"{consumer.name} consume {event_name(envelope.event_type)}",
        context=propagate.extract(trace_carrier(envelope)),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.consumer.group.name": consumer.name,
            "messaging.message.id": envelope.event_id,
            "marketplace.event_type": envelope.event_type,
            "marketplace.aggregate_id": envelope.aggregate_id,
        },
    ) as span:
        yield span


def _log_outcome(
    consumer: Consumer, outcome: Outcome, envelope: envelope_pb2.EventEnvelope
) -> None:
    log.info(
        "%s %s %s %s",
        consumer.name,
        outcome.value,
        event_name(envelope.event_type),
        envelope.event_id,
        extra={"event_id": envelope.event_id, "aggregate_id": envelope.aggregate_id},
    )


async def _handle(
    consumer: Consumer, events: Sequence[DeliveredEvent], uow: UnitOfWork, tracer: trace.Tracer
) -> None:
    """Run the consumer's handling of claimed events in the unit of work."""
    if consumer.handle_batch is not None:
        await consumer.handle_batch(events, uow)
        return
    for event in events:
        with _consume_span(tracer, consumer, event.envelope):
            await consumer.handlers[event.event_type](event, uow)


async def process(
    consumer: Consumer,
    envelope: envelope_pb2.EventEnvelope,
    unit_of_work: Callable[[], UnitOfWork],
    *,
    tracer: trace.Tracer | None = None,
    settle: Settle | None = None,
) -> Outcome:
    """Handle one delivered event at most once per (consumer, event_id); raise to retry it.

    `settle`, if given, runs in the unit of work after the handler (a handled or duplicate
    event's message deleted with its effects)."""
    tracer = tracer or trace.get_tracer(__name__)
    with _consume_span(tracer, consumer, envelope) as span:
        if envelope.event_type not in consumer.handlers:
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
            if claimed and consumer.handle_batch is not None:
                await consumer.handle_batch([event], uow)
            elif claimed:
                await consumer.handlers[event.event_type](event, uow)
            if settle is not None:
                await settle(uow)
        outcome = Outcome.HANDLED if claimed else Outcome.DUPLICATE
        span.set_attribute("marketplace.outcome", outcome.value)
        _log_outcome(consumer, outcome, envelope)
        return outcome


async def process_batch(
    consumer: Consumer,
    envelopes: Sequence[envelope_pb2.EventEnvelope],
    unit_of_work: Callable[[], UnitOfWork],
    *,
    tracer: trace.Tracer | None = None,
    settle: Settle | None = None,
) -> list[Outcome]:
    """Handle several delivered events in one unit of work, each at most once per
    (consumer, event_id), then `settle`; the outcome of each envelope, in order. Raises, with
    nothing committed, if the claim, any handler or the settlement fails."""
    tracer = tracer or trace.get_tracer(__name__)
    outcomes = [Outcome.IGNORED] * len(envelopes)
    wanted = [
        (position, DeliveredEvent(envelope, unpack_payload(envelope)))
        for position, envelope in enumerate(envelopes)
        if envelope.event_type in consumer.handlers
    ]
    async with unit_of_work() as uow:
        claimed = await inbox.claim_batch(
            uow.session,
            consumer=consumer.name,
            events=[(event.event_id, event.event_type) for _, event in wanted],
        )
        to_handle: list[DeliveredEvent] = []
        for position, event in wanted:
            if event.event_id in claimed:
                claimed.discard(event.event_id)  # a second copy in the batch is a duplicate
                outcomes[position] = Outcome.HANDLED
                to_handle.append(event)
            else:
                outcomes[position] = Outcome.DUPLICATE
        await _handle(consumer, to_handle, uow, tracer)
        if settle is not None:
            await settle(uow)
    for outcome, envelope in zip(outcomes, envelopes, strict=True):
        _log_outcome(consumer, outcome, envelope)
    return outcomes

"""One contract for both adapters of the event bus port: the local bus into PostgreSQL queues and
EventBridge into SQS (moto in server mode, rules and targets made from the routing file).
Routing follows deploy/ecs/event_rules.json; the body is the documented wire format; refused
entries come back as failed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.events.v1 import (
    envelope_pb2,
    inventory_events_pb2,
    order_events_pb2,
    payment_events_pb2,
    shipping_events_pb2,
)
from marketplace_platform.event_bus import EventBus, decode_message_body, trace_carrier
from marketplace_platform.event_bus.eventbridge import EventBridgeBus
from marketplace_platform.event_bus.local import LocalEventBus
from marketplace_platform.event_bus.provision import create_eventbridge_rules
from marketplace_platform.event_bus.rules import Routing, load_routing
from marketplace_platform.outbox import OutboxWriter, define_outbox_table
from marketplace_platform.queues import Queues
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.queues.provision import create_sqs_queues
from marketplace_platform.queues.sqs import SqsQueues

# What deploy/ecs/event_rules.json promises: event type -> the queues that receive it.
EXPECTED_ROUTES = {
    "OrderPlaced": {"email", "invoice", "analytics"},
    "OrderCancelled": {
        "shipping",
        "email",
        "invoice",
        "analytics",
        "payment-release",
        "stock-release",
    },
    "ShipmentRequested": {"shipping", "analytics"},
    "ShipmentCreated": {"shipping", "email", "analytics"},
    "PaymentRefunded": {"invoice", "analytics"},
    "InventoryReserved": {"analytics"},
}
PAYLOADS: dict[str, tuple[str, Message]] = {
    "OrderPlaced": ("checkout", order_events_pb2.OrderPlaced()),
    "OrderCancelled": ("checkout", order_events_pb2.OrderCancelled()),
    "ShipmentRequested": ("checkout", shipping_events_pb2.ShipmentRequested()),
    "ShipmentCreated": ("shipping", shipping_events_pb2.ShipmentCreated()),
    "PaymentRefunded": ("payment", payment_events_pb2.PaymentRefunded()),
    "InventoryReserved": ("inventory", inventory_events_pb2.InventoryReserved()),
}


@dataclasses.dataclass
class Wiring:
    bus: EventBus
    queues: Queues
    routing: Routing
    prefix: str
    engine: AsyncEngine
    events_client: Any = None


@pytest.fixture(params=["local", "eventbridge"])
async def wiring(request: pytest.FixtureRequest, engine: AsyncEngine) -> Wiring:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    routing = dataclasses.replace(
        load_routing().prefixed(prefix), event_bus_name=f"{prefix}marketplace"
    )
    if request.param == "local":
        queues = PostgresQueues(engine, routing.queues)
        return Wiring(LocalEventBus(routing, queues), queues, routing, prefix, engine)
    request.getfixturevalue("aws_credentials")
    endpoint = request.getfixturevalue("moto_endpoint")
    import boto3  # type: ignore[import-untyped]

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    events = boto3.client("events", region_name="us-east-1", endpoint_url=endpoint)
    arns = await asyncio.to_thread(create_sqs_queues, sqs, routing.queues)
    await asyncio.to_thread(create_eventbridge_rules, events, routing, arns)
    sqs_queues = SqsQueues(sqs, routing.queues)
    bus = EventBridgeBus(events, routing.event_bus_name)
    return Wiring(bus, sqs_queues, routing, prefix, engine, events)


def envelope_of(kind: str) -> envelope_pb2.EventEnvelope:
    producer, payload = PAYLOADS[kind]
    writer = OutboxWriter(define_outbox_table(MetaData()), producer=producer)
    return writer.envelope(payload, aggregate_type="order", aggregate_id=str(uuid.uuid4()))


async def drain(queues: Queues, queue: str, expected: int) -> list[str]:
    """Every body on `queue`, deleting them, until `expected` arrived (and a last empty look)."""
    bodies: list[str] = []
    deadline = time.monotonic() + 10
    while len(bodies) < expected and time.monotonic() < deadline:
        for message in await queues.receive(queue, max_messages=10, visibility_timeout_seconds=30):
            bodies.append(message.body)
            await queues.delete(queue, message.receipt_handle)
    bodies.extend(m.body for m in await queues.receive(queue, max_messages=10))
    return bodies


async def test_routing_follows_the_rules_file(wiring: Wiring) -> None:
    envelopes = {kind: envelope_of(kind) for kind in EXPECTED_ROUTES}
    result = await wiring.bus.publish(list(envelopes.values()))
    assert not result.failed
    assert set(result.published) == {e.event_id for e in envelopes.values()}
    kind_of = {e.event_id: kind for kind, e in envelopes.items()}
    for queue in sorted(set().union(*EXPECTED_ROUTES.values())):
        expected = {kind for kind, targets in EXPECTED_ROUTES.items() if queue in targets}
        bodies = await drain(wiring.queues, wiring.prefix + queue, len(expected))
        received = [kind_of[decode_message_body(body).event_id] for body in bodies]
        assert sorted(received) == sorted(expected), queue


async def test_the_body_is_the_documented_eventbridge_event_with_the_envelope_as_detail(
    wiring: Wiring,
) -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("checkout") as span:
        envelope = envelope_of("ShipmentRequested")
    assert envelope.trace_context.traceparent
    await wiring.bus.publish([envelope])
    (body,) = await drain(wiring.queues, wiring.prefix + "shipping", 1)
    event: dict[str, Any] = json.loads(body)
    assert event["detail-type"] == "marketplace.events.v1.ShipmentRequested"
    assert event["source"] == "marketplace.checkout"
    assert event["detail"]["eventId"] == envelope.event_id
    decoded = decode_message_body(body)
    assert decoded == envelope
    # The consumer's span continues the producer's trace across the asynchronous hop.
    context = propagate.extract(trace_carrier(decoded))
    with provider.get_tracer("consumer").start_as_current_span("consume", context=context) as child:
        assert child.get_span_context().trace_id == span.get_span_context().trace_id
        assert isinstance(child, ReadableSpan)
        assert child.parent is not None
        assert child.parent.span_id == span.get_span_context().span_id


class FailingQueues(PostgresQueues):
    """Local queues whose one queue refuses every send."""

    def __init__(self, engine: AsyncEngine, routing: Routing, broken: str) -> None:
        super().__init__(engine, routing.queues)
        self._broken = broken

    async def send_batch(self, queue: str, bodies: Sequence[str]) -> list[str]:
        if queue == self._broken:
            raise ConnectionError("queue unavailable")
        return await super().send_batch(queue, bodies)


class RefusingEvents:
    """A boto3 events client whose PutEvents entries of one type lose their Source, so
    EventBridge itself refuses those entries while accepting the rest of the call."""

    def __init__(self, client: Any, refused_type: str) -> None:
        self._client = client
        self._refused_type = refused_type

    def put_events(self, Entries: list[dict[str, Any]]) -> Any:
        for entry in Entries:
            if entry["DetailType"] == self._refused_type:
                entry.pop("Source")
        return self._client.put_events(Entries=Entries)


async def test_refused_entries_are_reported_failed_and_the_rest_published(wiring: Wiring) -> None:
    if wiring.events_client is not None:
        bus: EventBus = EventBridgeBus(
            RefusingEvents(wiring.events_client, "marketplace.events.v1.ShipmentRequested"),
            wiring.routing.event_bus_name,
        )
    else:
        broken = FailingQueues(wiring.engine, wiring.routing, wiring.prefix + "shipping")
        bus = LocalEventBus(wiring.routing, broken)
    placed, requested = envelope_of("OrderPlaced"), envelope_of("ShipmentRequested")
    result = await bus.publish([placed, requested])
    assert set(result.failed) == {requested.event_id}
    assert result.published == (placed.event_id,)
    bodies = await drain(wiring.queues, wiring.prefix + "email", 1)
    assert [decode_message_body(body).event_id for body in bodies] == [placed.event_id]

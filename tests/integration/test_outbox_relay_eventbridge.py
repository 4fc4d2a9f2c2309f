"""The outbox relay publishing to EventBridge (moto in server mode) whose rules, made from the
routing file, deliver to SQS queues: every outbox row arrives where the rules send it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import inventory_events_pb2
from marketplace_platform.db import unit_of_work_factory
from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.event_bus.eventbridge import EventBridgeBus
from marketplace_platform.event_bus.provision import create_eventbridge_rules
from marketplace_platform.event_bus.rules import Routing, load_routing
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.queues.provision import create_sqs_queues
from marketplace_platform.queues.sqs import SqsQueues
from services.inventory.adapters import tables as inventory_tables
from workers.outbox_relay.relay import OutboxRelay

# The relay publishes every unpublished row of the schema: on a database of this module's own,
# no other module's rows are in its batches or in the queues.
pytestmark = pytest.mark.own_database


async def test_relayed_rows_reach_the_sqs_queues_the_eventbridge_rules_name(
    engine: AsyncEngine, moto_endpoint: str, aws_credentials: None
) -> None:
    import boto3  # type: ignore[import-untyped]

    prefix = f"e{uuid.uuid4().hex[:8]}-"
    loaded = load_routing().prefixed(prefix)
    routing = Routing(f"{prefix}bus", loaded.rules, loaded.queues)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_endpoint)
    events = boto3.client("events", region_name="us-east-1", endpoint_url=moto_endpoint)
    arns = await asyncio.to_thread(create_sqs_queues, sqs, routing.queues)
    await asyncio.to_thread(create_eventbridge_rules, events, routing, arns)
    queues = SqsQueues(sqs, routing.queues)

    unit_of_work = unit_of_work_factory(
        engine, OutboxWriter(inventory_tables.outbox, producer="inventory")
    )
    written: list[str] = []
    order_id = str(uuid.uuid4())
    async with unit_of_work() as uow:
        for _ in range(25):
            event = inventory_events_pb2.InventoryReserved(
                reservation_id=ids_pb2.ReservationId(value=str(uuid.uuid4())),
                order_id=ids_pb2.OrderId(value=order_id),
            )
            envelope = await uow.publish(event, aggregate_type="order", aggregate_id=order_id)
            written.append(envelope.event_id)

    relay = OutboxRelay(
        engine, EventBridgeBus(events, routing.event_bus_name), schemas=["inventory"]
    )
    while await relay.relay_once():
        pass

    received: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    while sum(received.values()) < len(written) and time.monotonic() < deadline:
        for message in await queues.receive(prefix + "analytics", max_messages=10):
            envelope = decode_message_body(message.body)
            if envelope.aggregate_id == order_id:
                received[envelope.event_id] += 1
            await queues.delete(prefix + "analytics", message.receipt_handle)
    assert received == Counter(written)
    # InventoryReserved matches only the catch-all rule: the other queues stay empty.
    for queue in ("shipping", "email", "invoice"):
        stats = await queues.stats(prefix + queue)
        assert (stats.visible, stats.in_flight) == (0, 0), queue

"""The analytics consumer's handler: every event it receives becomes one order fact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from marketplace.events.v1 import (
    inventory_events_pb2,
    order_events_pb2,
    payment_events_pb2,
    shipping_events_pb2,
)
from marketplace_platform.db import UnitOfWork
from workers.consumers.analytics.sink import FactSink
from workers.consumers.consumer import BatchHandler, DeliveredEvent, Handler, event_name

CONSUMER = "analytics"

EVENT_TYPES = tuple(
    message.DESCRIPTOR.full_name
    for module in (order_events_pb2, payment_events_pb2, inventory_events_pb2, shipping_events_pb2)
    for message in vars(module).values()
    if isinstance(message, type) and hasattr(message, "DESCRIPTOR")
)


def fact_of(event: DeliveredEvent) -> dict[str, Any]:
    """The fact recorded for an event: what, when, which aggregate, and the payload's fields."""
    envelope = event.envelope
    return {
        "event": event_name(event.event_type),
        "event_type": event.event_type,
        "occurred_at": event.occurred_at.isoformat(),
        "producer": envelope.producer,
        "aggregate_type": envelope.aggregate_type,
        "aggregate_id": envelope.aggregate_id,
        "data": json_format.MessageToDict(event.payload, preserving_proto_field_name=True),
    }


def handlers(sink: FactSink) -> Mapping[str, Handler]:
    """The same handler for every domain event type."""

    async def record(event: DeliveredEvent, uow: UnitOfWork) -> None:
        await sink.append_many(
            [(str(event.event_id), event.occurred_at, fact_of(event))], session=uow.session
        )

    return dict.fromkeys(EVENT_TYPES, record)


def record_batch(sink: FactSink) -> BatchHandler:
    """The facts of a batch's events appended to the sink together."""

    async def record_all(events: Sequence[DeliveredEvent], uow: UnitOfWork) -> None:
        await sink.append_many(
            [(str(event.event_id), event.occurred_at, fact_of(event)) for event in events],
            session=uow.session,
        )

    return record_all

"""`OrderCancelled` -> `ReleaseReservation`: a hold is released, sold units are returned.

Whatever cancelled the order (the saga's compensation, the timeout sweep, the customer after
confirmation), the order's units come back exactly once: inventory releases an ACTIVE
reservation, returns a COMMITTED one to stock, leaves an already released one alone, and marks
an order that never reserved so a late reservation is refused. Failures are retried by the
consumer loop (UNAVAILABLE with a growing backoff that does not use up receives).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.events.v1 import order_events_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace_platform.db import UnitOfWork
from workers.consumers.consumer import DeliveredEvent, Handler

if TYPE_CHECKING:
    from marketplace.inventory.v1.inventory_service_pb2_grpc import (
        InventoryServiceAsyncStub as InventoryStub,
    )

CONSUMER = "stock-release"


def handlers(inventory: InventoryStub) -> Mapping[str, Handler]:
    """The stock-release consumer's handler per event type."""

    async def on_order_cancelled(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, order_events_pb2.OrderCancelled)
        await release_stock(event.payload, inventory)

    return {order_events_pb2.OrderCancelled.DESCRIPTOR.full_name: on_order_cancelled}


def release_reason(failure: checkout_pb.FailureReason.ValueType) -> pb.ReleaseReason.ValueType:
    """Inventory's name for why the order was cancelled (ORDER_FAILED when it has none)."""
    name = checkout_pb.FailureReason.Name(failure).removeprefix("FAILURE_REASON_")
    try:
        return pb.ReleaseReason.Value(f"RELEASE_REASON_{name}")
    except ValueError:
        return pb.RELEASE_REASON_ORDER_FAILED


async def release_stock(
    cancelled: order_events_pb2.OrderCancelled, inventory: InventoryStub
) -> None:
    """Give the cancelled order's units back (idempotent by order)."""
    await inventory.ReleaseReservation(
        pb.ReleaseReservationRequest(
            idempotency_key=f"{cancelled.order_id.value}:cancelled",
            order_id=cancelled.order_id,
            reason=release_reason(cancelled.failure_reason),
        )
    )

"""The shipping consumer's handlers.

- `ShipmentRequested`: book the parcel with the carrier (idempotent by the shipment id that
  checkout assigned), record the shipment and write `ShipmentCreated` to this schema's outbox in
  the same transaction; a shipment already recorded (a redelivery, a second request, or its
  `ShipmentCreated` seen first) books and publishes nothing. A cancelled order gets no parcel:
  the carrier is asked to call back any it booked for a delivery whose commit was lost.
- `ShipmentCreated`: `MarkOrderShipped` (key `<shipment_id>:shipped`), and once that answers
  the order SHIPPED (every merchant shipped), `CapturePayment` of the order total (key
  `<order_id>:capture`). The capture happens here, after the order is SHIPPED: an order that
  became SHIPPED can no longer be cancelled, so a capture never races a cancellation's void, and
  the payment service allows one capture per authorization. A cancelled order refuses the mark:
  its parcel is called back and no capture happens.
- `OrderCancelled`: remember the order, so later requests for it book no parcel.

Handlers of one order take a transaction-scoped advisory lock on it, so a cancellation and a
request of the same order are handled one after the other.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.events.v1 import order_events_pb2, shipping_events_pb2
from marketplace.payment.v1 import payment_service_pb2 as payment_pb
from marketplace_platform.db import UnitOfWork
from marketplace_platform.errors import DependencyUnavailable
from workers.consumers.consumer import DeliveredEvent, Handler
from workers.consumers.shipping.carrier import Carrier, ParcelRequest
from workers.consumers.tables import cancelled_orders, shipments

if TYPE_CHECKING:
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as CheckoutStub,
    )
    from marketplace.payment.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub as PaymentStub,
    )

log = logging.getLogger(__name__)

CONSUMER = "shipping"
AGGREGATE = "shipment"


@dataclass(frozen=True)
class ShippingDeps:
    """The carrier and the services the shipping consumer calls."""

    carrier: Carrier
    checkout: CheckoutStub
    payment: PaymentStub


class CaptureIncomplete(DependencyUnavailable):
    """The capture's outcome is not known yet; the event is retried until it is (a shipped
    order must be charged), never dead-lettered for it."""


def handlers(deps: ShippingDeps) -> Mapping[str, Handler]:
    """The shipping consumer's handler per event type."""

    async def on_shipment_requested(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, shipping_events_pb2.ShipmentRequested)
        await request_shipment(event.payload, uow, deps)

    async def on_shipment_created(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, shipping_events_pb2.ShipmentCreated)
        await ship_and_capture(event.payload, uow, deps)

    async def on_order_cancelled(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, order_events_pb2.OrderCancelled)
        await remember_cancellation(event.payload, uow)

    return {
        shipping_events_pb2.ShipmentRequested.DESCRIPTOR.full_name: on_shipment_requested,
        shipping_events_pb2.ShipmentCreated.DESCRIPTOR.full_name: on_shipment_created,
        order_events_pb2.OrderCancelled.DESCRIPTOR.full_name: on_order_cancelled,
    }


async def request_shipment(
    request: shipping_events_pb2.ShipmentRequested, uow: UnitOfWork, deps: ShippingDeps
) -> None:
    """Book one parcel per shipment id and publish ShipmentCreated once."""
    shipment_id = uuid.UUID(request.shipment_id.value)
    order_id = uuid.UUID(request.order_id.value)
    await lock_order(uow.session, order_id)
    if await shipment_status(uow.session, shipment_id) is not None:
        return
    merchant = request.merchant_id.value
    if await is_cancelled(uow.session, order_id):
        # An earlier delivery may have booked the parcel and lost its commit (the writer went
        # away): the carrier is the only one who knows, so it is asked to call it back.
        await deps.carrier.cancel_parcel(shipment_id)
        await uow.session.execute(
            insert(shipments)
            .values(
                shipment_id=shipment_id, order_id=order_id, merchant_id=merchant, status="CANCELLED"
            )
            .on_conflict_do_nothing()
        )
        log.info(
            "no parcel for shipment %s (any booked is called back): order %s was cancelled",
            shipment_id,
            order_id,
        )
        return
    parcel = await deps.carrier.create_parcel(
        ParcelRequest(
            shipment_id=shipment_id,
            order_id=order_id,
            merchant_id=merchant,
            recipient=request.shipping_address.name,
            postal_code=request.shipping_address.postal_code,
            country=request.shipping_address.country,
            units=sum(line.quantity for line in request.lines),
        )
    )
    inserted = await uow.session.execute(
        insert(shipments)
        .values(
            shipment_id=shipment_id,
            order_id=order_id,
            merchant_id=merchant,
            status="CREATED",
            carrier=parcel.carrier,
            tracking_number=parcel.tracking_number,
            shipped_at=parcel.shipped_at,
        )
        .on_conflict_do_nothing()
        .returning(shipments.c.shipment_id)
    )
    if inserted.first() is None:
        return
    created = shipping_events_pb2.ShipmentCreated(
        shipment_id=request.shipment_id,
        order_id=request.order_id,
        merchant_id=request.merchant_id,
        carrier=parcel.carrier,
        tracking_number=parcel.tracking_number,
    )
    created.shipped_at.FromDatetime(parcel.shipped_at)
    await uow.publish(created, aggregate_type=AGGREGATE, aggregate_id=str(shipment_id))


async def ship_and_capture(
    created: shipping_events_pb2.ShipmentCreated, uow: UnitOfWork, deps: ShippingDeps
) -> None:
    """Record the shipment on the order; capture the payment once the order is SHIPPED."""
    shipment_id = uuid.UUID(created.shipment_id.value)
    order_id = uuid.UUID(created.order_id.value)
    await lock_order(uow.session, order_id)
    # Seen before its request (out of order): the parcel exists, so a later request books none.
    await uow.session.execute(
        insert(shipments)
        .values(
            shipment_id=shipment_id,
            order_id=order_id,
            merchant_id=created.merchant_id.value,
            status="CREATED",
            carrier=created.carrier,
            tracking_number=created.tracking_number,
            shipped_at=created.shipped_at.ToDatetime(tzinfo=UTC)
            if created.HasField("shipped_at")
            else None,
        )
        .on_conflict_do_nothing()
    )
    if await shipment_status(uow.session, shipment_id) == "CANCELLED":
        return
    shipment = checkout_pb.Shipment(
        shipment_id=created.shipment_id,
        merchant_id=created.merchant_id,
        carrier=created.carrier,
        tracking_number=created.tracking_number,
    )
    if created.HasField("shipped_at"):
        shipment.shipped_at.CopyFrom(created.shipped_at)
    try:
        marked = await deps.checkout.MarkOrderShipped(
            checkout_pb.MarkOrderShippedRequest(
                idempotency_key=f"{shipment_id}:shipped",
                order_id=created.order_id,
                shipment=shipment,
            )
        )
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            raise
        await call_back(shipment_id, order_id, uow, deps, error.details() or "")
        return
    order = marked.order
    if order.status == checkout_pb.ORDER_STATUS_SHIPPED:
        await capture(order, deps)


async def capture(order: checkout_pb.Order, deps: ShippingDeps) -> None:
    """Capture the order total once, whichever ShipmentCreated completes the order."""
    request = payment_pb.CapturePaymentRequest(
        idempotency_key=f"{order.order_id.value}:capture",
        order_id=order.order_id,
        amount=order.total,
    )
    try:
        payment = (await deps.payment.CapturePayment(request)).payment
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            raise
        # Refused by state: done already (captured under this key) or never possible.
        payment = (
            await deps.payment.GetPayment(payment_pb.GetPaymentRequest(order_id=order.order_id))
        ).payment
        if payment.captured.amount_minor < order.total.amount_minor:
            raise
    if payment.captured.amount_minor < order.total.amount_minor:
        status = payment_pb.PaymentStatus.Name(payment.status)
        raise CaptureIncomplete(f"capture of order {order.order_id.value} is {status}")


async def call_back(
    shipment_id: uuid.UUID, order_id: uuid.UUID, uow: UnitOfWork, deps: ShippingDeps, why: str
) -> None:
    """The order refused the shipment (it was cancelled): call the parcel back, capture nothing."""
    await deps.carrier.cancel_parcel(shipment_id)
    await uow.session.execute(
        update(shipments).where(shipments.c.shipment_id == shipment_id).values(status="CANCELLED")
    )
    log.warning("order %s refused shipment %s (%s): parcel called back", order_id, shipment_id, why)


async def remember_cancellation(
    cancelled: order_events_pb2.OrderCancelled, uow: UnitOfWork
) -> None:
    """Record the cancelled order, so no parcel is booked for it afterwards."""
    order_id = uuid.UUID(cancelled.order_id.value)
    await lock_order(uow.session, order_id)
    await uow.session.execute(
        insert(cancelled_orders).values(order_id=order_id).on_conflict_do_nothing()
    )


async def lock_order(session: AsyncSession, order_id: uuid.UUID) -> None:
    """Serialize this consumer's handling of one order until the transaction ends."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"shipping:{order_id}"},
    )


async def shipment_status(session: AsyncSession, shipment_id: uuid.UUID) -> str | None:
    """CREATED or CANCELLED for a known shipment, None for a new one."""
    found = await session.execute(
        select(shipments.c.status).where(shipments.c.shipment_id == shipment_id)
    )
    status: str | None = found.scalar()
    return status


async def is_cancelled(session: AsyncSession, order_id: uuid.UUID) -> bool:
    """Whether this consumer saw the order's OrderCancelled."""
    found = await session.execute(
        select(func.count())
        .select_from(cancelled_orders)
        .where(cancelled_orders.c.order_id == order_id)
    )
    return bool(found.scalar())

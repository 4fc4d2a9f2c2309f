"""The checkout saga's order steps. Each is idempotent by order: a repeat returns the first
outcome and writes nothing new."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from marketplace_platform.errors import NotFound
from marketplace_platform.metrics import CHECKOUTS
from marketplace_platform.money import Money
from services.checkout.domain import fraud, tax
from services.checkout.domain.order import (
    FailureReason,
    FraudAssessment,
    Order,
    OrderStatus,
    shipment_id_for,
)
from services.checkout.service_layer import events
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import AbstractCheckoutUnitOfWork, OrderRepositoryPort


@dataclass(frozen=True)
class TaxedOrder:
    """The order's tax and the total the saga authorizes."""

    tax: Money
    total: Money


async def calculate_tax(order_id: uuid.UUID, *, deps: CheckoutDeps) -> TaxedOrder:
    """Compute the tax from the shipping country's rate and store tax and total."""
    async with deps.unit_of_work() as uow:
        order = await locked(uow.orders, order_id)
        if order.record_tax(tax.tax_on(order.subtotal, order.shipping_address.country)):
            await uow.orders.save(order)
    assert order.tax is not None
    assert order.total is not None
    return TaxedOrder(order.tax, order.total)


async def assess_fraud(order_id: uuid.UUID, *, deps: CheckoutDeps) -> FraudAssessment:
    """The order's fraud verdict; the first one stands."""
    async with deps.unit_of_work() as uow:
        order = await locked(uow.orders, order_id)
        verdict = fraud.assess(
            payment_method=order.payment_method, total=order.total or order.subtotal
        )
        if order.record_fraud(verdict):
            await uow.orders.save(order)
    assert order.fraud is not None
    return order.fraud


async def confirm_order(
    order_id: uuid.UUID,
    *,
    reservation_id: uuid.UUID,
    payment_id: uuid.UUID,
    deps: CheckoutDeps,
) -> Order:
    """PENDING -> CONFIRMED with OrderPlaced and one ShipmentRequested per merchant, together."""
    async with deps.unit_of_work() as uow:
        order = await locked(uow.orders, order_id)
        confirmed = order.confirm(reservation_id=reservation_id, payment_id=payment_id)
        if confirmed:
            shipments = order.request_shipments(
                shipment_id_for(order.order_id, merchant) for merchant in order.merchants
            )
            await uow.orders.save(order)
            await _publish(uow, order, events.order_placed(order))
            for shipment in shipments:
                await _publish(uow, order, events.shipment_requested(order, shipment))
    if confirmed:  # counted once committed, and once per order (a replay changes nothing)
        CHECKOUTS.labels("confirmed").inc()
    return order


async def fail_order(
    order_id: uuid.UUID, *, reason: FailureReason, detail: str, deps: CheckoutDeps
) -> Order:
    """PENDING -> CANCELLED with the reason and OrderCancelled; a CANCELLED order is returned."""
    async with deps.unit_of_work() as uow:
        order = await locked(uow.orders, order_id)
        failed = order.fail(reason, detail)
        if failed:
            await uow.orders.save(order)
            await _publish(uow, order, events.order_cancelled(order, OrderStatus.PENDING))
    if failed:
        CHECKOUTS.labels(f"failed_{reason.name.lower()}").inc()
    return order


@dataclass(frozen=True, kw_only=True)
class MarkShipped:
    """A merchant's parcel of an order was handed to a carrier."""

    order_id: uuid.UUID
    shipment_id: uuid.UUID
    merchant_id: str
    carrier: str
    tracking_number: str
    shipped_at: datetime


async def mark_shipped(command: MarkShipped, *, deps: CheckoutDeps) -> Order:
    """Record the shipment; the order is SHIPPED once every merchant has shipped."""
    async with deps.unit_of_work() as uow:
        order = await locked(uow.orders, command.order_id)
        changed = order.mark_shipped(
            shipment_id=command.shipment_id,
            merchant_id=command.merchant_id,
            carrier=command.carrier,
            tracking_number=command.tracking_number,
            shipped_at=command.shipped_at,
        )
        if changed:
            await uow.orders.save(order)
    return order


async def locked(orders: OrderRepositoryPort, order_id: uuid.UUID) -> Order:
    """The order, row-locked for a transition, or NotFound."""
    order = await orders.get(order_id, for_update=True)
    if order is None:
        raise NotFound(f"no order {order_id}", metadata={"order_id": str(order_id)})
    return order


async def _publish(uow: AbstractCheckoutUnitOfWork, order: Order, event: events.Event) -> None:
    await uow.publish(event, aggregate_type=events.AGGREGATE, aggregate_id=str(order.order_id))

"""Order reads and customer cancellation."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from marketplace_platform.errors import (
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.checkout.adapters.order_repository import OrderRepository
from services.checkout.domain.order import Money, Order, OrderStatus
from services.checkout.service_layer import events
from services.checkout.service_layer.placement import Checkout
from services.checkout.service_layer.ports import PaymentSummary
from services.checkout.service_layer.steps import locked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderView:
    """An order as its customer sees it, with the payment summary when one is known."""

    order: Order
    payment: PaymentSummary | None


async def get_order(order_id: uuid.UUID, customer_id: str, deps: Checkout) -> OrderView:
    """One of the customer's orders; anyone else's is NotFound."""
    async with deps.unit_of_work() as uow:
        order = await OrderRepository(uow.session).get(order_id)
    if order is None or order.customer_id != customer_id:
        raise NotFound(f"no order {order_id}", metadata={"order_id": str(order_id)})
    return OrderView(order, await _payment_of(order, deps))


async def list_orders(
    customer_id: str, *, page_size: int, page_token: str, deps: Checkout
) -> tuple[list[Order], str]:
    """A page of the customer's orders, newest first, and the next page's token."""
    before = _after_token(page_token)
    async with deps.unit_of_work() as uow:
        page = await OrderRepository(uow.session).list_for_customer(
            customer_id, before=before, limit=page_size + 1
        )
    more = len(page) > page_size
    page = page[:page_size]
    return page, str(page[-1].order_id) if more else ""


async def cancel_order(order_id: uuid.UUID, customer_id: str, deps: Checkout) -> OrderView:
    """Customer cancellation.

    A PENDING order records the request (its saga refuses to confirm, compensates and fails it
    with CUSTOMER_CANCELLED). A CONFIRMED order's payment is voided, or refunded if captured,
    and then the order is CANCELLED. A CANCELLED order is returned as it is; SHIPPED is refused.
    """
    view = await get_order(order_id, customer_id, deps)
    if view.order.status is OrderStatus.CONFIRMED:
        await _settle_payment(order_id, view.payment, deps)
    async with deps.unit_of_work() as uow:
        orders = OrderRepository(uow.session)
        order = await locked(orders, order_id)
        previous = order.status
        if previous is OrderStatus.PENDING:
            changed = order.request_cancel()
        elif previous is OrderStatus.CONFIRMED and view.order.status is OrderStatus.PENDING:
            # Confirmed between our read and our lock: the payment was not settled yet.
            raise FailedPrecondition(
                f"order {order_id} was just confirmed; retry the cancellation",
                metadata={"order_id": str(order_id)},
            )
        else:
            changed = order.cancel_confirmed()
        if changed:
            await orders.save(order)
        if changed and order.status is OrderStatus.CANCELLED:
            await uow.publish(
                events.order_cancelled(order, previous),
                aggregate_type=events.AGGREGATE,
                aggregate_id=str(order_id),
            )
    return OrderView(order, await _payment_of(order, deps))


async def _settle_payment(
    order_id: uuid.UUID, payment: PaymentSummary | None, deps: Checkout
) -> None:
    """Void a held authorization, or refund what was captured and not yet refunded."""
    if payment is None:
        payment = await deps.payments.summary(order_id)
    if payment is None or payment.status in ("VOIDED", "REFUNDED", "FAILED"):
        return
    if payment.status == "PENDING":
        raise DependencyUnavailable(
            f"the payment of order {order_id} is still being resolved; retry shortly"
        )
    if payment.status == "AUTHORIZED":
        try:
            await deps.payments.void(order_id, idempotency_key=f"{order_id}:cancel-void")
            return
        except FailedPrecondition:
            # Captured between our read and the void: refund instead.
            payment = await deps.payments.summary(order_id)
            if payment is None:
                raise
    outstanding = payment.captured.amount - payment.refunded.amount
    if outstanding > 0:
        await deps.payments.refund(
            order_id,
            Money(outstanding, payment.captured.currency),
            idempotency_key=f"{order_id}:cancel-refund",
        )


async def _payment_of(order: Order, deps: Checkout) -> PaymentSummary | None:
    # Reads stay available when payment is not: the order is answered without its summary.
    try:
        return await deps.payments.summary(order.order_id)
    except DomainError as error:
        log.warning("payment summary of order %s unavailable: %s", order.order_id, error)
        return None


def _after_token(page_token: str) -> uuid.UUID | None:
    if not page_token:
        return None
    try:
        return uuid.UUID(page_token)
    except ValueError:
        raise InvalidArgument("page_token is not one this service issued") from None

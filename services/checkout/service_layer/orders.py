"""Order reads and customer cancellation."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from marketplace_platform.errors import DomainError, InvalidArgument, NotFound
from services.checkout.domain.order import Order, OrderStatus
from services.checkout.service_layer import events
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import PaymentSummary
from services.checkout.service_layer.steps import locked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderView:
    """An order as its customer sees it, with the payment summary when one is known."""

    order: Order
    payment: PaymentSummary | None


async def get_order(
    order_id: uuid.UUID, customer_id: str, *, deps: CheckoutDeps, fresh: bool = False
) -> OrderView:
    """One of the customer's orders; anyone else's is NotFound.

    Read from the reader endpoint when there is one (it may lag the writer by a moment), unless
    `fresh`; an order the reader does not have yet, such as the customer's own just placed, is
    read from the writer, so a customer always finds the order they were answered with."""
    order = None
    if deps.reader is not None and not fresh:
        async with deps.reader() as uow:
            order = await uow.orders.get(order_id)
    if order is None or order.customer_id != customer_id:
        async with deps.unit_of_work() as uow:
            order = await uow.orders.get(order_id)
    if order is None or order.customer_id != customer_id:
        raise NotFound(f"no order {order_id}", metadata={"order_id": str(order_id)})
    return OrderView(order, await _payment_of(order, deps))


async def list_orders(
    customer_id: str, *, page_size: int, page_token: str, deps: CheckoutDeps
) -> tuple[list[Order], str]:
    """A page of the customer's orders, newest first, and the next page's token."""
    before = _after_token(page_token)
    async with deps.unit_of_work() as uow:
        page = await uow.orders.list_for_customer(customer_id, before=before, limit=page_size + 1)
    more = len(page) > page_size
    page = page[:page_size]
    return page, str(page[-1].order_id) if more else ""


async def cancel_order(order_id: uuid.UUID, customer_id: str, *, deps: CheckoutDeps) -> OrderView:
    """Customer cancellation, decided under the order's lock before any money moves.

    A PENDING order records the request (its saga refuses to confirm, compensates and fails it
    with CUSTOMER_CANCELLED). A CONFIRMED order with nothing shipped becomes CANCELLED with
    OrderCancelled in the same transaction; the payment service (void or refund) and inventory
    (the units back) settle from that event, retried until done. A CANCELLED order is returned
    as it is; a SHIPPED or partly shipped order is refused and its payment stays as it was.
    """
    async with deps.unit_of_work() as uow:
        order = await locked(uow.orders, order_id)
        if order.customer_id != customer_id:
            raise NotFound(f"no order {order_id}", metadata={"order_id": str(order_id)})
        previous = order.status
        if previous is OrderStatus.PENDING:
            changed = order.request_cancel()
        else:
            changed = order.cancel_confirmed()
        if changed:
            await uow.orders.save(order)
        if changed and order.status is OrderStatus.CANCELLED:
            await uow.publish(
                events.order_cancelled(order, previous),
                aggregate_type=events.AGGREGATE,
                aggregate_id=str(order_id),
            )
    return OrderView(order, await _payment_of(order, deps))


async def _payment_of(order: Order, deps: CheckoutDeps) -> PaymentSummary | None:
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

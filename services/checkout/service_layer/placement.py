"""PlaceOrder: at most one order per (customer, idempotency key) and per cart.

Rocket-rides-atomic style phases: (1) claim the key in its own short transaction, (2) price
the cart over gRPC, outside any transaction, (3) write the order, its OrderPending event and
the completed key in one transaction. After the commit, freeze the cart and start the saga (at
once); if the process dies before that, the completer does both later (they are idempotent).

The order's id is derived from (customer, idempotency key, cart)
(`idempotency.order_id_for`), not drawn at random: a retry in another Region, whose database
may never have received the first request's rows, names the same order, and everything keyed
by the order (the saga's execution, the reservation, the PSP's authorization) finds the first
request's work. So an order with that id already there is this same purchase placed earlier
(its key's record reaped, or written by a request that took over the key): it is answered as
a replay, and so is a cart checked out by it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from marketplace_platform.errors import NotFound, RequestInFlight
from services.checkout.domain import idempotency
from services.checkout.domain.errors import CartAlreadyOrdered, CartNotCheckoutable
from services.checkout.domain.idempotency import PlacedOrder
from services.checkout.domain.order import Order, OrderStatus, ShippingAddress
from services.checkout.service_layer import events
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.ports import (
    AbstractCheckoutUnitOfWork,
    CartStatus,
    PricedCart,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PlaceOrder:
    """Place an order from the customer's cart."""

    idempotency_key: str
    customer_id: str
    cart_id: uuid.UUID
    payment_method: str
    shipping_address: ShippingAddress


@dataclass(frozen=True)
class PlaceOrderResult:
    """The accepted order, and whether this answer replays an earlier one."""

    order_id: uuid.UUID
    status: OrderStatus
    replayed: bool


async def place_order(command: PlaceOrder, *, deps: CheckoutDeps) -> PlaceOrderResult:
    """Accept the order once per key: replay, refuse, or write it and start its saga."""
    request = idempotency.fingerprint(_request_fields(command))
    replay = await _claim_key(command, request, deps)
    if replay is not None:
        return PlaceOrderResult(replay.order_id, OrderStatus(replay.status), replayed=True)
    try:
        priced = await deps.carts.price_cart(
            cart_id=command.cart_id, customer_id=command.customer_id
        )
        order = _order_from(priced, command)
        placed, replayed = await _write_order(order, command, request, deps)
    except BaseException:
        await _release_key(command, deps)
        raise
    if not replayed:
        await complete_placement(order, deps=deps)
    return PlaceOrderResult(placed.order_id, OrderStatus(placed.status), replayed=replayed)


async def complete_placement(order: Order, *, deps: CheckoutDeps) -> bool:
    """Freeze the cart and start the saga, then note it; False (left to the completer) on error.
    The two are independent and idempotent, so they run at once: the saga starts without
    waiting for the cart service, and a failure of either leaves both to the completer."""
    try:
        outcomes = await asyncio.gather(
            deps.carts.mark_checked_out(
                cart_id=order.cart_id, customer_id=order.customer_id, order_id=order.order_id
            ),
            deps.saga.start_execution(name=str(order.order_id), payload=saga_input(order)),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        async with deps.unit_of_work() as uow:
            await uow.orders.mark_saga_started(order.order_id)
    except Exception:
        log.warning(
            "order %s committed but its saga is not started yet; the completer will retry",
            order.order_id,
            exc_info=True,
        )
        return False
    return True


def saga_input(order: Order) -> dict[str, Any]:
    """The execution input the checkout state machine reads (the cross-agent contract)."""
    subtotal = order.subtotal
    return {
        "order_id": str(order.order_id),
        "customer_id": order.customer_id,
        "payment_method": order.payment_method,
        "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order.lines],
        "subtotal": {"amount_minor": subtotal.amount_minor, "currency": subtotal.currency},
    }


async def _claim_key(command: PlaceOrder, request: str, deps: CheckoutDeps) -> PlacedOrder | None:
    async with deps.unit_of_work() as uow:
        keys = uow.keys
        claimed = await keys.claim(
            customer_id=command.customer_id,
            key=command.idempotency_key,
            fingerprint=request,
            lease=deps.lease,
        )
        if claimed:
            return None
        record = await keys.get(command.customer_id, command.idempotency_key)
        if record is None:  # reaped between our insert and read: the caller may simply retry
            raise RequestInFlight("idempotency key is being reaped; retry")
        replay = idempotency.resume(record, request, await keys.now())
        if replay is None:  # the first request's lease ran out: take over
            await keys.extend_lease(command.customer_id, command.idempotency_key, deps.lease)
        return replay


async def _write_order(
    order: Order, command: PlaceOrder, request: str, deps: CheckoutDeps
) -> tuple[PlacedOrder, bool]:
    async with deps.unit_of_work() as uow:
        keys = uow.keys
        if not await uow.orders.add(order):
            # The cart has an order. The one this request names is the same purchase, placed
            # earlier: replay it. Any other order of the cart is a conflict.
            existing = await uow.orders.order_id_for_cart(order.cart_id)
            if existing != order.order_id:
                raise _already_ordered(order.cart_id, existing)
            return await _placed_earlier(order.order_id, command, request, deps, uow), True
        await uow.publish(
            events.order_pending(order),
            aggregate_type=events.AGGREGATE,
            aggregate_id=str(order.order_id),
        )
        placed = PlacedOrder(order.order_id, order.status.value)
        # Claimed again if it was reaped while we priced the cart (a very slow request).
        await keys.complete_claim(
            customer_id=command.customer_id,
            key=command.idempotency_key,
            fingerprint=request,
            lease=deps.lease,
            response=placed,
        )
    return placed, False


async def _placed_earlier(
    order_id: uuid.UUID,
    command: PlaceOrder,
    request: str,
    deps: CheckoutDeps,
    uow: AbstractCheckoutUnitOfWork,
) -> PlacedOrder:
    """The answer for an order this request names that is already written: the key's stored
    answer (a request that took over our lease finished first), or else the order as it
    stands, stored under the key (its record was reaped since), so the next repeat replays."""
    record = await uow.keys.get(command.customer_id, command.idempotency_key)
    if record is not None and record.response is not None:
        return record.response
    existing = await uow.orders.get(order_id)
    assert existing is not None  # its cart's order, read in this transaction
    placed = PlacedOrder(order_id, existing.status.value)
    await uow.keys.complete_claim(
        customer_id=command.customer_id,
        key=command.idempotency_key,
        fingerprint=request,
        lease=deps.lease,
        response=placed,
    )
    return placed


async def _release_key(command: PlaceOrder, deps: CheckoutDeps) -> None:
    # The request produced no order: let a retry with the same key run at once instead of
    # waiting out the lease. If this fails too, the lease simply expires.
    try:
        async with deps.unit_of_work() as uow:
            await uow.keys.release_lease(command.customer_id, command.idempotency_key)
    except Exception:
        log.warning("could not release idempotency key lease", exc_info=True)


def _order_from(priced: PricedCart, command: PlaceOrder) -> Order:
    if priced.customer_id != command.customer_id:
        raise NotFound(f"no cart {command.cart_id}", metadata={"cart_id": str(command.cart_id)})
    order_id = idempotency.order_id_for(
        customer_id=command.customer_id,
        idempotency_key=command.idempotency_key,
        cart_id=command.cart_id,
    )
    # A cart checked out by the order this request names is this purchase, placed earlier
    # (perhaps in another Region, its order not yet here): it is written or replayed below.
    if priced.status is CartStatus.CHECKED_OUT and priced.order_id != order_id:
        raise _already_ordered(command.cart_id, priced.order_id)
    if priced.problems or not priced.lines:
        details = "; ".join(p.detail or p.kind for p in priced.problems) or "the cart is empty"
        raise CartNotCheckoutable(
            f"cart {command.cart_id} cannot be checked out: {details}",
            metadata={
                "cart_id": str(command.cart_id),
                "problems": ",".join(p.kind for p in priced.problems) or "EMPTY_CART",
            },
        )
    return Order(
        order_id=order_id,
        customer_id=command.customer_id,
        cart_id=command.cart_id,
        lines=priced.lines,
        shipping_address=command.shipping_address,
        payment_method=command.payment_method,
    )


def _already_ordered(cart_id: uuid.UUID, order_id: uuid.UUID | None) -> CartAlreadyOrdered:
    metadata = {"cart_id": str(cart_id)}
    if order_id is not None:
        metadata["existing_order_id"] = str(order_id)
    return CartAlreadyOrdered(
        f"cart {cart_id} was already checked out by order {order_id}", metadata=metadata
    )


def _request_fields(command: PlaceOrder) -> dict[str, Any]:
    return {
        "cart_id": str(command.cart_id),
        "payment_method": command.payment_method,
        "shipping_address": asdict(command.shipping_address),
    }

"""Checkout's domain errors. Each `reason` is on the wire (the gateway and the saga tasks read
it), so a reason string never changes."""

from __future__ import annotations

from marketplace_platform.errors import FailedPrecondition


class IllegalTransition(FailedPrecondition):
    """The order's state does not allow this change."""

    reason = "ILLEGAL_ORDER_TRANSITION"


class CancelRequested(IllegalTransition):
    """Confirmation refused: the customer asked to cancel (or the order already ended), so the
    saga must compensate instead of confirming."""

    reason = "CANCEL_REQUESTED"


class CartAlreadyOrdered(FailedPrecondition):
    """The cart already produced an order (its id is in the metadata as existing_order_id)."""

    reason = "CART_ALREADY_ORDERED"


class CartNotCheckoutable(FailedPrecondition):
    """The cart is empty or has lines that cannot be bought."""

    reason = "CART_NOT_CHECKOUTABLE"

"""The outside systems checkout depends on, as small interfaces (fakes subclass these)."""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from enum import StrEnum

from services.checkout.domain.order import Money, OrderLine


class CartStatus(StrEnum):
    """A cart's status as the cart service reports it."""

    OPEN = "OPEN"
    CHECKED_OUT = "CHECKED_OUT"


@dataclass(frozen=True)
class PricingProblem:
    """One thing that blocks checking a cart out."""

    kind: str
    detail: str
    sku: str = ""


@dataclass(frozen=True)
class PricedCart:
    """A cart priced for checkout: the lines and prices an order freezes, or why it cannot."""

    cart_id: uuid.UUID
    customer_id: str
    status: CartStatus
    lines: tuple[OrderLine, ...]
    subtotal: Money
    problems: tuple[PricingProblem, ...] = ()
    order_id: uuid.UUID | None = None


class Carts(abc.ABC):
    """The cart service as PlaceOrder uses it."""

    @abc.abstractmethod
    async def price_cart(self, *, cart_id: uuid.UUID, customer_id: str) -> PricedCart:
        """Price the customer's cart against the catalog now (NotFound for another's cart)."""

    @abc.abstractmethod
    async def mark_checked_out(
        self, *, cart_id: uuid.UUID, customer_id: str, order_id: uuid.UUID
    ) -> None:
        """Freeze the cart as checked out by the order (idempotent)."""


@dataclass(frozen=True)
class PaymentSummary:
    """An order's payment as the customer sees it."""

    status: str
    authorized: Money
    captured: Money
    refunded: Money


class Payments(abc.ABC):
    """The payment service as order reads use it (cancellations settle money from events)."""

    @abc.abstractmethod
    async def summary(self, order_id: uuid.UUID) -> PaymentSummary | None:
        """The order's payment, or None when it has none."""

"""Checkout's tests' stand-ins and requests: payments in memory (what order reads show), carts
of one mug, a saga port that starts nothing, and a PlaceOrder request for a cart."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.common.v1 import address_pb2, ids_pb2
from marketplace_platform.money import Money
from marketplace_platform.saga import SagaStarter, StartedExecution
from services.checkout.domain.order import OrderLine
from services.checkout.service_layer.ports import (
    CartPort,
    CartStatus,
    PaymentPort,
    PaymentSummary,
    PricedCart,
)


@dataclass
class FakePayments(PaymentPort):
    """Payments in memory: what order reads show."""

    payments: dict[uuid.UUID, PaymentSummary] = field(default_factory=dict)

    async def summary(self, order_id: uuid.UUID) -> PaymentSummary | None:
        return self.payments.get(order_id)


def place_request(
    customer_id: str,
    cart_id: uuid.UUID,
    key: str,
    *,
    method: str = "pm_card_visa",
    country: str = "US",
) -> pb.PlaceOrderRequest:
    """A PlaceOrder request for the customer's cart under `key`."""
    return pb.PlaceOrderRequest(
        idempotency_key=key,
        customer_id=ids_pb2.CustomerId(value=customer_id),
        cart_id=ids_pb2.CartId(value=str(cart_id)),
        payment_method=method,
        shipping_address=address_pb2.Address(
            name="Ada Lovelace", line1="1 Main St", city="Springfield", postal_code="12345",
            country=country,
        ),
    )  # fmt: skip


class OneLineCarts(CartPort):
    """Every cart is its customer's, open, with one mug."""

    async def price_cart(self, *, cart_id: uuid.UUID, customer_id: str) -> PricedCart:
        line = OrderLine("MUG-1", "acme", "Mug", 1, Money(500, "USD"))
        return PricedCart(cart_id, customer_id, CartStatus.OPEN, (line,), Money(500, "USD"))

    async def mark_checked_out(
        self, *, cart_id: uuid.UUID, customer_id: str, order_id: uuid.UUID
    ) -> None:
        return None


class NoSaga(SagaStarter):
    """Starts nothing: the test settles orders itself."""

    async def start_execution(self, *, name: str, payload: Any) -> StartedExecution:
        return StartedExecution(f"exec-{name}", name, already_existed=False)

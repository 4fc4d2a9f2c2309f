"""A client of the cart, checkout and payment gRPC servers a test started: one stub each on a
channel of its own, retrying idempotent calls as the services' callers do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketplace.cart.v1 import cart_service_pb2_grpc as cart_grpc
from marketplace.checkout.v1 import checkout_service_pb2_grpc as checkout_grpc
from marketplace.payment.v1 import payment_service_pb2_grpc as payment_grpc
from marketplace_platform.channels import open_channel
from marketplace_platform.grpc_server import RunningServer

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as CartStub
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as CheckoutStub,
    )
    from marketplace.payment.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub as PaymentStub,
    )


@dataclass(frozen=True)
class Shop:
    cart: CartStub
    checkout: CheckoutStub
    payment: PaymentStub


@asynccontextmanager
async def shop_of(
    cart: RunningServer, checkout: RunningServer, payment: RunningServer, *, call_timeout: float
) -> AsyncIterator[Shop]:
    """Stubs of the three servers, each call with `call_timeout` unless it says otherwise."""
    channels = [
        open_channel(
            f"127.0.0.1:{server.port}", default_timeout=call_timeout, idempotent_services=[name]
        )
        for server, name in (
            (cart, "marketplace.cart.v1.CartService"),
            (checkout, "marketplace.checkout.v1.CheckoutService"),
            (payment, "marketplace.payment.v1.PaymentService"),
        )
    ]
    try:
        yield Shop(
            cart_grpc.CartServiceStub(channels[0]),
            checkout_grpc.CheckoutServiceStub(channels[1]),
            payment_grpc.PaymentServiceStub(channels[2]),
        )
    finally:
        for channel in channels:
            await channel.close()

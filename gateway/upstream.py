"""The gRPC services behind the gateway: channels opened at startup, one stub per service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.settings import GatewaySettings
from marketplace.cart.v1 import cart_service_pb2, cart_service_pb2_grpc
from marketplace.checkout.v1 import checkout_service_pb2, checkout_service_pb2_grpc
from marketplace.inventory.v1 import inventory_service_pb2, inventory_service_pb2_grpc
from marketplace_platform.channels import open_channel

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub
    from marketplace.checkout.v1.checkout_service_pb2_grpc import CheckoutServiceAsyncStub
    from marketplace.inventory.v1.inventory_service_pb2_grpc import InventoryServiceAsyncStub

CART = cart_service_pb2.DESCRIPTOR.services_by_name["CartService"].full_name
INVENTORY = inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
CHECKOUT = checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name
HEALTH_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Upstreams:
    """Stubs for cart, inventory and checkout, and the channels under them."""

    cart: CartServiceAsyncStub
    inventory: InventoryServiceAsyncStub
    checkout: CheckoutServiceAsyncStub
    channels: dict[str, grpc.aio.Channel]

    async def not_serving(self) -> list[str]:
        """The services whose health check does not answer SERVING right now."""
        results = await asyncio.gather(
            *(_serving(channel, name) for name, channel in self.channels.items())
        )
        return [name for name, ok in zip(self.channels, results, strict=True) if not ok]

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))


def open_upstreams(settings: GatewaySettings) -> Upstreams:
    """Channels to each service; every call's deadline is capped by the request's budget."""

    def channel(target: str, service: str) -> grpc.aio.Channel:
        # Every method of ours is a read or carries an idempotency key: safe to retry.
        return open_channel(
            target,
            default_timeout=settings.gateway_request_budget_seconds,
            idempotent_services=[service],
        )

    channels = {
        CART: channel(settings.cart_target, CART),
        INVENTORY: channel(settings.inventory_target, INVENTORY),
        CHECKOUT: channel(settings.checkout_target, CHECKOUT),
    }
    return Upstreams(
        # the generated stubs are typed for aio channels
        cart=cart_service_pb2_grpc.CartServiceStub(channels[CART]),
        inventory=inventory_service_pb2_grpc.InventoryServiceStub(channels[INVENTORY]),
        checkout=checkout_service_pb2_grpc.CheckoutServiceStub(channels[CHECKOUT]),
        channels=channels,
    )


async def _serving(channel: grpc.aio.Channel, service: str) -> bool:
    stub: Any = health_pb2_grpc.HealthStub(channel)  # the stub types lack aio methods
    try:
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_CHECK_SECONDS
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

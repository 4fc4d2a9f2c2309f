"""The cart service as its tests call it: a running cart server and its stub, products, carts
and their lines, each with fresh ids."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2 as pb
from marketplace.cart.v1 import cart_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2, money_pb2
from marketplace_platform.grpc_server import RunningServer
from services.cart import bootstrap as cart
from tests.support.grpc_probes import SERVING, health_status
from tests.support.keys import customer_id
from tests.support.keys import idempotency_key as key
from tests.support.polling import until_equal
from tests.support.servers import serving

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as Stub


@asynccontextmanager
async def running_cart(
    engine: AsyncEngine, redis_url: str, *, wait_for_cache: bool = True, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A cart server on a free port with its cache upkeep loop running, as in production."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "grpc_port": 0,
        "cart_cache_retry_seconds": 0.1,
        "cart_cache_sweep_seconds": 0.2,
    }
    settings = cart.CartSettings(**(values | overrides))
    async with serving(settings, cart.build(settings), engine, background=True) as running:
        if wait_for_cache:
            await until_equal(lambda: cache_health(running), SERVING)
        yield running


async def cache_health(running: RunningServer) -> int:
    """What the server reports under the cache's own health name."""
    return await health_status(f"127.0.0.1:{running.port}", cart.CACHE_HEALTH_NAME)


@asynccontextmanager
async def cart_stub(running: RunningServer) -> AsyncIterator[Stub]:
    """A stub on a channel of its own."""
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{running.port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        yield pb_grpc.CartServiceStub(channel)
    finally:
        await channel.close()


def customer() -> ids_pb2.CustomerId:
    """A new customer's id."""
    return ids_pb2.CustomerId(value=customer_id())


def fresh_sku(prefix: str = "C") -> str:
    """A SKU no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def money(amount: int, currency: str = "USD") -> money_pb2.Money:
    """`amount` minor units of `currency` on the wire."""
    return money_pb2.Money(amount_minor=amount, currency=currency)


async def add_product(
    stub: Stub, sku: str, amount: int = 1000, *, currency: str = "USD", listed: bool = True
) -> pb.Product:
    """Upsert a product into the catalog (admin) and return it."""
    response = await stub.UpsertProduct(
        pb.UpsertProductRequest(
            idempotency_key=key(),
            sku=ids_pb2.Sku(value=sku),
            name=f"Product {sku}",
            price=money(amount, currency),
            listed=listed,
        )
    )
    return response.product


async def new_cart(stub: Stub, owner: ids_pb2.CustomerId) -> pb.Cart:
    """A new empty cart of `owner`."""
    return (
        await stub.CreateCart(pb.CreateCartRequest(idempotency_key=key(), customer_id=owner))
    ).cart


def set_request(
    cart: pb.Cart, sku: str, quantity: int, expected_version: int = 0, idempotency_key: str = ""
) -> pb.SetItemQuantityRequest:
    """A SetItemQuantity request for the cart under a fresh key."""
    return pb.SetItemQuantityRequest(
        idempotency_key=idempotency_key or key(),
        cart_id=cart.cart_id,
        customer_id=cart.customer_id,
        sku=ids_pb2.Sku(value=sku),
        quantity=quantity,
        expected_version=expected_version,
    )


async def set_quantity(
    stub: Stub, cart: pb.Cart, sku: str, quantity: int, version: int = 0
) -> pb.Cart:
    """Set the SKU's quantity in the cart; the cart as it is after."""
    return (await stub.SetItemQuantity(set_request(cart, sku, quantity, version))).cart


async def get_cart(stub: Stub, cart: pb.Cart) -> pb.Cart:
    """The cart as its owner reads it."""
    request = pb.GetCartRequest(cart_id=cart.cart_id, customer_id=cart.customer_id)
    return (await stub.GetCart(request)).cart

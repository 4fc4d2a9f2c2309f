"""PlaceOrder against the real cart service over gRPC and the real local saga engine's
starter, on a real PostgreSQL: prices frozen from the cart's pricing, the cart frozen by the
order, one order per cart and per key under real races, the saga execution named by the order.
Payment stays a fake of checkout's port (reads only here)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.cart.v1 import cart_service_pb2_grpc as cart_grpc
from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as pb_grpc
from marketplace.common.v1 import ids_pb2, money_pb2
from marketplace_platform import errors
from marketplace_platform.channels import open_channel
from marketplace_platform.grpc_errors import from_rpc_error
from marketplace_platform.saga.local import LocalSagaStarter
from tests.support.checkout import FakePayments, place_request
from tests.support.keys import customer_id as customer
from tests.support.keys import idempotency_key as key
from tests.support.refusals import refusal
from tests.support.servers import ServiceServers

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub as CartStub
    from marketplace.checkout.v1.checkout_service_pb2_grpc import (
        CheckoutServiceAsyncStub as Stub,
    )

RACERS = 20
WITHIN = 30.0


@dataclass
class Stack:
    checkout: Stub
    cart: CartStub
    saga: LocalSagaStarter


pytestmark = pytest.mark.engine(db_pool_size=25)


@pytest.fixture(scope="module")
async def stack(
    engine: AsyncEngine, grpc_servers: ServiceServers, redis_server_url: str
) -> AsyncIterator[Stack]:
    cart_server = await grpc_servers.cart(redis_url=redis_server_url, cart_cache_enabled=False)
    cart_target = f"127.0.0.1:{cart_server.port}"
    saga = LocalSagaStarter(engine)
    checkout_server = await grpc_servers.checkout(
        cart_target=cart_target, ports={"payments": FakePayments(), "saga": saga}
    )
    channels = [
        open_channel(f"127.0.0.1:{checkout_server.port}", default_timeout=WITHIN),
        open_channel(cart_target, default_timeout=WITHIN),
    ]
    yield Stack(
        pb_grpc.CheckoutServiceStub(channels[0]), cart_grpc.CartServiceStub(channels[1]), saga
    )
    for channel in channels:
        await channel.close()


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


async def filled_cart(stack: Stack, customer: str) -> uuid.UUID:
    """A cart holding 2 x a 500-cent mug from acme and 1 x a 1500-cent tee from globex."""
    suffix = uuid.uuid4().hex[:8]
    lines = [(f"MUG-{suffix}", "acme", 500, 2), (f"TEE-{suffix}", "globex", 1500, 1)]
    for sku, merchant, price, _ in lines:
        await stack.cart.UpsertProduct(
            cart_pb.UpsertProductRequest(
                idempotency_key=key(),
                sku=ids_pb2.Sku(value=sku),
                name=f"product {sku}",
                price=usd(price),
                merchant_id=ids_pb2.MerchantId(value=merchant),
            )
        )
    created = await stack.cart.CreateCart(
        cart_pb.CreateCartRequest(
            idempotency_key=key(), customer_id=ids_pb2.CustomerId(value=customer)
        )
    )
    cart_id = created.cart.cart_id
    for sku, _, _, quantity in lines:
        await stack.cart.SetItemQuantity(
            cart_pb.SetItemQuantityRequest(
                idempotency_key=key(),
                cart_id=cart_id,
                customer_id=ids_pb2.CustomerId(value=customer),
                sku=ids_pb2.Sku(value=sku),
                quantity=quantity,
            )
        )
    return uuid.UUID(cart_id.value)


async def cart_of(stack: Stack, customer: str, cart_id: uuid.UUID) -> cart_pb.Cart:
    response = await stack.cart.GetCart(
        cart_pb.GetCartRequest(
            cart_id=ids_pb2.CartId(value=str(cart_id)),
            customer_id=ids_pb2.CustomerId(value=customer),
        )
    )
    return response.cart


async def test_an_order_freezes_the_cart_prices_and_starts_its_saga(stack: Stack) -> None:
    buyer = customer()
    cart_id = await filled_cart(stack, buyer)
    request = place_request(buyer, cart_id, key())
    placed = await stack.checkout.PlaceOrder(request)
    replay = await stack.checkout.PlaceOrder(request)
    assert (replay.order_id, replay.replayed) == (placed.order_id, True)

    order = (
        await stack.checkout.GetOrder(
            pb.GetOrderRequest(
                order_id=placed.order_id, customer_id=ids_pb2.CustomerId(value=buyer)
            )
        )
    ).order
    assert sorted((line.merchant_id.value, line.quantity) for line in order.lines) == [
        ("acme", 2),
        ("globex", 1),
    ]
    assert order.subtotal == usd(2500)
    frozen = await cart_of(stack, buyer, cart_id)
    assert frozen.status == cart_pb.CART_STATUS_CHECKED_OUT
    assert frozen.order_id.value == placed.order_id.value
    execution = await stack.saga.describe(placed.order_id.value)
    assert execution is not None
    assert execution.input["order_id"] == placed.order_id.value
    assert execution.input["subtotal"] == {"amount_minor": 2500, "currency": "USD"}


async def test_races_on_one_real_cart_make_one_order(stack: Stack) -> None:
    buyer = customer()
    cart_id = await filled_cart(stack, buyer)
    same_key = place_request(buyer, cart_id, key())
    requests = [same_key] * RACERS + [place_request(buyer, cart_id, key()) for _ in range(RACERS)]
    outcomes = await asyncio.gather(
        *(stack.checkout.PlaceOrder(r) for r in requests), return_exceptions=True
    )

    orders = {o.order_id.value for o in outcomes if isinstance(o, pb.PlaceOrderResponse)}
    assert len(orders) == 1, outcomes
    (order_id,) = orders
    for outcome in outcomes:
        if isinstance(outcome, grpc.aio.AioRpcError):
            error = from_rpc_error(outcome)
            assert isinstance(error, errors.RequestInFlight | errors.FailedPrecondition), error
            if isinstance(error, errors.FailedPrecondition):
                assert error.reason == "CART_ALREADY_ORDERED"
                assert error.metadata["existing_order_id"] == order_id
    assert (await cart_of(stack, buyer, cart_id)).order_id.value == order_id
    execution = await stack.saga.describe(order_id)
    assert execution is not None


async def test_a_checked_out_cart_is_refused_with_its_order(stack: Stack) -> None:
    buyer = customer()
    cart_id = await filled_cart(stack, buyer)
    placed = await stack.checkout.PlaceOrder(place_request(buyer, cart_id, key()))
    error = await refusal(stack.checkout.PlaceOrder(place_request(buyer, cart_id, key())))
    assert error.reason == "CART_ALREADY_ORDERED"
    assert error.metadata["existing_order_id"] == placed.order_id.value


async def test_empty_and_foreign_carts_are_refused(stack: Stack) -> None:
    buyer = customer()
    created = await stack.cart.CreateCart(
        cart_pb.CreateCartRequest(
            idempotency_key=key(), customer_id=ids_pb2.CustomerId(value=buyer)
        )
    )
    empty = uuid.UUID(created.cart.cart_id.value)
    refused = await refusal(stack.checkout.PlaceOrder(place_request(buyer, empty, key())))
    assert refused.reason == "CART_NOT_CHECKOUTABLE"
    foreign = await refusal(stack.checkout.PlaceOrder(place_request(customer(), empty, key())))
    assert isinstance(foreign, errors.NotFound)
    assert (await cart_of(stack, buyer, empty)).status == cart_pb.CART_STATUS_OPEN

"""A client's retry in another Region finds the first authorization instead of making a second.

Region B's database is an asynchronous replica of A's: an order A acknowledged (and authorized,
even captured) may never have reached it when A is lost. Here the order is placed and
authorized through the real checkout and payment gRPC servers and the real PSP simulator (which,
being the outside world, survives the Region), then its rows are deleted from checkout's and
payment's tables, its idempotency key's too, to stand for B's replica that never received them.
The client's retry with the same key and cart names the same order, and authorizing it again
finds the PSP's first intent: one intent for the order, as the PSP has it now.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.payment.v1 import payment_service_pb2 as payment_pb
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.ids import new_id
from services.cart.adapters import tables as cart_tables
from services.checkout.adapters import tables as checkout_tables
from services.payment.adapters import tables as payment_tables
from tests.support.psp import RunningPsp
from tests.support.servers import ServiceServers
from tests.support.shop import Shop, shop_of

if TYPE_CHECKING:
    pass


@pytest.fixture(scope="module")
async def payment_server(grpc_servers: ServiceServers, psp: RunningPsp) -> RunningServer:
    return await grpc_servers.payment(psp_url=psp.url, psp_timeout_seconds=2.0)


@pytest.fixture(scope="module")
async def cart_server(grpc_servers: ServiceServers, redis_server_url: str) -> RunningServer:
    return await grpc_servers.cart(redis_url=redis_server_url, cart_cache_enabled=False)


@pytest.fixture(scope="module")
async def shop(
    cart_server: RunningServer, checkout_server: RunningServer, payment_server: RunningServer
) -> AsyncIterator[Shop]:
    async with shop_of(cart_server, checkout_server, payment_server, call_timeout=10.0) as stubs:
        yield stubs


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


@dataclass(frozen=True)
class Purchase:
    """What the client sends, and sends again after the Region is lost."""

    request: checkout_pb.PlaceOrderRequest

    @property
    def customer(self) -> ids_pb2.CustomerId:
        return self.request.customer_id


async def a_purchase(shop: Shop) -> Purchase:
    """A cart with two units of a product, and the PlaceOrder request for it."""
    unique = new_id().hex
    customer = ids_pb2.CustomerId(value=f"customer-{unique[-12:]}")
    created = await shop.cart.CreateCart(
        cart_pb.CreateCartRequest(idempotency_key=f"cart-{unique}", customer_id=customer)
    )
    sku = ids_pb2.Sku(value=f"REGION-{unique[-10:]}")
    await shop.cart.UpsertProduct(
        cart_pb.UpsertProductRequest(
            idempotency_key=f"product-{unique}", sku=sku, name="Mug", price=usd(1250),
            merchant_id=ids_pb2.MerchantId(value="acme"),
        )
    )  # fmt: skip
    await shop.cart.SetItemQuantity(
        cart_pb.SetItemQuantityRequest(
            idempotency_key=f"line-{unique}", cart_id=created.cart.cart_id, customer_id=customer,
            sku=sku, quantity=2,
        )
    )  # fmt: skip
    return Purchase(
        checkout_pb.PlaceOrderRequest(
            idempotency_key=f"place-{unique}", customer_id=customer, cart_id=created.cart.cart_id,
            payment_method="pm_card_visa",
            shipping_address=address_pb2.Address(
                name="Ada Lovelace", line1="1 Main St", city="Springfield", postal_code="12345",
                country="US",
            ),
        )
    )  # fmt: skip


async def place_and_authorize(
    shop: Shop, purchase: Purchase, *, attempt: str
) -> tuple[ids_pb2.OrderId, payment_pb.Payment]:
    """PlaceOrder, then the saga's tax and authorization steps (keys of this `attempt`: each
    Region's saga execution has its own)."""
    placed = await shop.checkout.PlaceOrder(purchase.request)
    order_id = placed.order_id
    taxed = await shop.checkout.CalculateTax(
        checkout_pb.CalculateTaxRequest(
            idempotency_key=f"{order_id.value}:{attempt}:tax", order_id=order_id
        )
    )
    authorized = await shop.payment.AuthorizePayment(
        payment_pb.AuthorizePaymentRequest(
            idempotency_key=f"{order_id.value}:{attempt}:authorize", order_id=order_id,
            customer_id=purchase.customer, amount=taxed.total, payment_method="pm_card_visa",
        )
    )  # fmt: skip
    return order_id, authorized.payment


async def lose_the_region(
    engine: AsyncEngine, purchase: Purchase, order_id: str, *, cart_replicated: bool
) -> None:
    """Delete the order's rows from checkout's and payment's tables and its idempotency key,
    as in the other Region's replica that never received them (and the cart's checkout too,
    unless `cart_replicated`)."""
    order = uuid.UUID(order_id)
    checkout, payment = checkout_tables, payment_tables
    async with engine.begin() as connection:
        for table in (checkout.order_lines, checkout.order_shipments):
            await connection.execute(delete(table).where(table.c.order_id == order))
        await connection.execute(delete(checkout.orders).where(checkout.orders.c.order_id == order))
        await connection.execute(
            delete(checkout.idempotency_keys).where(
                checkout.idempotency_keys.c.customer_id == purchase.customer.value,
                checkout.idempotency_keys.c.key == purchase.request.idempotency_key,
            )
        )
        await connection.execute(
            delete(checkout.outbox).where(checkout.outbox.c.aggregate_id == order_id)
        )
        found = await connection.execute(
            payment.payments.select().where(payment.payments.c.order_id == order)
        )
        payment_ids = [row.payment_id for row in found]
        operations = payment.payment_operations
        await connection.execute(delete(operations).where(operations.c.payment_id.in_(payment_ids)))
        await connection.execute(
            delete(payment.payments).where(payment.payments.c.order_id == order)
        )
        await connection.execute(
            delete(payment.outbox).where(payment.outbox.c.aggregate_id == order_id)
        )
        if not cart_replicated:
            carts = cart_tables.carts
            await connection.execute(
                update(carts)
                .where(carts.c.cart_id == uuid.UUID(purchase.request.cart_id.value))
                .values(status="OPEN", order_id=None)
            )


@pytest.mark.parametrize("cart_replicated", [True, False], ids=["cart-replicated", "cart-lost"])
async def test_a_retry_after_the_region_lost_the_order_finds_its_first_authorization(
    shop: Shop, engine: AsyncEngine, psp: RunningPsp, cart_replicated: bool
) -> None:
    purchase = await a_purchase(shop)
    order_id, first = await place_and_authorize(shop, purchase, attempt="region-a")
    assert first.status == payment_pb.PAYMENT_STATUS_AUTHORIZED
    await lose_the_region(engine, purchase, order_id.value, cart_replicated=cart_replicated)

    retried_id, again = await place_and_authorize(shop, purchase, attempt="region-b")

    assert retried_id.value == order_id.value
    assert again.payment_id.value != first.payment_id.value  # another Region's ledger
    assert again.status == payment_pb.PAYMENT_STATUS_AUTHORIZED
    assert again.psp_reference == first.psp_reference
    assert again.authorized == first.authorized
    intents = await psp.intents(order_id=order_id.value)
    assert [(i["id"], i["status"]) for i in intents] == [(first.psp_reference, "requires_capture")]
    assert intents[0]["metadata"] == {
        "order_id": order_id.value,
        "customer_id": purchase.customer.value,
    }
    (operation,) = again.operations
    assert operation.psp_idempotency_key == f"authorize-{order_id.value}"
    # The order is there again, the cart still checked out by it, the key answering it.
    order = await shop.checkout.GetOrder(
        checkout_pb.GetOrderRequest(order_id=order_id, customer_id=purchase.customer)
    )
    assert order.order.status == checkout_pb.ORDER_STATUS_PENDING
    replay = await shop.checkout.PlaceOrder(purchase.request)
    assert replay.order_id.value == order_id.value


async def test_a_retry_after_the_region_lost_a_captured_order_does_not_capture_it_again(
    shop: Shop, engine: AsyncEngine, psp: RunningPsp
) -> None:
    purchase = await a_purchase(shop)
    order_id, first = await place_and_authorize(shop, purchase, attempt="region-a")
    captured = await shop.payment.CapturePayment(
        payment_pb.CapturePaymentRequest(
            idempotency_key=f"{order_id.value}:region-a:capture", order_id=order_id,
            amount=first.authorized,
        )
    )  # fmt: skip
    assert captured.payment.status == payment_pb.PAYMENT_STATUS_CAPTURED
    await lose_the_region(engine, purchase, order_id.value, cart_replicated=True)

    retried_id, again = await place_and_authorize(shop, purchase, attempt="region-b")
    assert retried_id.value == order_id.value
    # The authorization happened (and was captured since): held, under the first intent.
    assert (again.status, again.psp_reference) == (
        payment_pb.PAYMENT_STATUS_AUTHORIZED,
        first.psp_reference,
    )
    recaptured = await shop.payment.CapturePayment(
        payment_pb.CapturePaymentRequest(
            idempotency_key=f"{order_id.value}:region-b:capture", order_id=order_id,
            amount=again.authorized,
        )
    )  # fmt: skip

    assert recaptured.payment.status == payment_pb.PAYMENT_STATUS_CAPTURED
    assert recaptured.payment.captured == first.authorized
    intents = await psp.intents(order_id=order_id.value)
    assert [(i["id"], i["status"], i["amount_received"]) for i in intents] == [
        (first.psp_reference, "succeeded", first.authorized.amount_minor)
    ]


async def test_a_retry_after_the_region_lost_a_voided_order_records_nothing_held(
    shop: Shop, engine: AsyncEngine, psp: RunningPsp
) -> None:
    purchase = await a_purchase(shop)
    order_id, first = await place_and_authorize(shop, purchase, attempt="region-a")
    voided = await shop.payment.VoidPayment(
        payment_pb.VoidPaymentRequest(
            idempotency_key=f"{order_id.value}:region-a:void", order_id=order_id,
            reason=payment_pb.VOID_REASON_ORDER_FAILED,
        )
    )  # fmt: skip
    assert voided.payment.status == payment_pb.PAYMENT_STATUS_VOIDED
    await lose_the_region(engine, purchase, order_id.value, cart_replicated=True)

    _, again = await place_and_authorize(shop, purchase, attempt="region-b")

    # The PSP replays the first authorization; the intent as it is now says it was voided.
    assert (again.status, again.failure_code, again.psp_reference) == (
        payment_pb.PAYMENT_STATUS_FAILED,
        "canceled",
        first.psp_reference,
    )
    intents = await psp.intents(order_id=order_id.value)
    assert [(i["id"], i["status"]) for i in intents] == [(first.psp_reference, "canceled")]


async def test_the_same_purchase_after_its_key_was_forgotten_is_answered_as_a_replay(
    shop: Shop, engine: AsyncEngine
) -> None:
    purchase = await a_purchase(shop)
    first = await shop.checkout.PlaceOrder(purchase.request)
    keys = checkout_tables.idempotency_keys
    async with engine.begin() as connection:  # reaped, or never replicated: the order stays
        await connection.execute(
            delete(keys).where(
                keys.c.customer_id == purchase.customer.value,
                keys.c.key == purchase.request.idempotency_key,
            )
        )

    # The order already has the id the request names: the same purchase, never a conflict.
    again = await shop.checkout.PlaceOrder(purchase.request)
    later = await shop.checkout.PlaceOrder(purchase.request)  # replayed from the key again

    assert again.order_id.value == later.order_id.value == first.order_id.value
    assert (first.replayed, again.replayed, later.replayed) == (False, True, True)
    async with engine.connect() as connection:
        orders = checkout_tables.orders
        count = await connection.scalar(
            select(func.count())
            .select_from(orders)
            .where(orders.c.cart_id == uuid.UUID(purchase.request.cart_id.value))
        )
        stored = await connection.scalar(
            select(keys.c.response).where(
                keys.c.customer_id == purchase.customer.value,
                keys.c.key == purchase.request.idempotency_key,
            )
        )
    assert count == 1
    assert stored is not None
    assert stored["order_id"] == first.order_id.value

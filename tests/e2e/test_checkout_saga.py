"""The checkout saga end to end on the real multi-process stack (`make run`'s supervisor):
cart -> PlaceOrder -> the saga engine running deploy/ecs/checkout_saga.asl.json through the
saga tasks -> inventory and payment (against the PSP simulator) -> CONFIRMED or CANCELLED; and
`Prefer: wait` through the gateway, answered when the saga settles the order."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import httpx
import pytest

from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.cart.v1 import cart_service_pb2_grpc as cart_grpc
from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.checkout.v1 import checkout_service_pb2_grpc as checkout_grpc
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from tests.support import shopper
from tests.support.stack import LaunchedStack, running_stack

if TYPE_CHECKING:
    from marketplace.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub
    from marketplace.checkout.v1.checkout_service_pb2_grpc import CheckoutServiceAsyncStub
    from marketplace.inventory.v1.inventory_service_pb2_grpc import InventoryServiceAsyncStub

pytestmark = pytest.mark.stack

SETTLES_WITHIN = 60.0
# A confirmed order: the shipping consumer may already have shipped it by the time we look.
PLACED = (checkout_pb.ORDER_STATUS_CONFIRMED, checkout_pb.ORDER_STATUS_SHIPPED)
ADDRESS = address_pb2.Address(
    name="Ada Lovelace", line1="12 St James's Square", city="London", postal_code="SW1Y 4JH",
    country="GB",
)  # fmt: skip


@dataclass
class Clients:
    cart: CartServiceAsyncStub
    inventory: InventoryServiceAsyncStub
    checkout: CheckoutServiceAsyncStub


@pytest.fixture(scope="module")
async def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LaunchedStack]:
    """One stack for this module's tests (each makes its own SKUs, customers and orders, and
    leaves every process running), instead of one each: it saves two stack starts."""
    async with running_stack(database_url, tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture
async def clients(stack: LaunchedStack) -> AsyncIterator[Clients]:
    await stack.wait_for_line("all services SERVING", within=90)
    channels = [
        grpc.aio.insecure_channel(stack.grpc_address(n)) for n in ("cart", "inventory", "checkout")
    ]
    stubs: list[Any] = [
        cart_grpc.CartServiceStub(channels[0]),
        inventory_grpc.InventoryServiceStub(channels[1]),
        checkout_grpc.CheckoutServiceStub(channels[2]),
    ]
    yield Clients(*stubs)
    for channel in channels:
        await channel.close()


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


async def stock_a_product(clients: Clients, *, on_hand: int, price_minor: int) -> str:
    """A new SKU in the catalog and in stock."""
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    await clients.cart.UpsertProduct(
        cart_pb.UpsertProductRequest(
            idempotency_key=key("product"),
            sku=ids_pb2.Sku(value=sku),
            name="Enamel mug",
            price=money_pb2.Money(amount_minor=price_minor, currency="USD"),
        ),
        timeout=10,
    )
    await clients.inventory.SetStock(
        inventory_pb.SetStockRequest(
            idempotency_key=key("stock"), sku=ids_pb2.Sku(value=sku), on_hand=on_hand
        ),
        timeout=10,
    )
    return sku


async def cart_with(clients: Clients, customer: str, sku: str, quantity: int) -> str:
    """A customer's cart holding `quantity` of `sku`."""
    created = await clients.cart.CreateCart(
        cart_pb.CreateCartRequest(
            idempotency_key=key("cart"), customer_id=ids_pb2.CustomerId(value=customer)
        ),
        timeout=10,
    )
    cart_id = created.cart.cart_id.value
    await clients.cart.SetItemQuantity(
        cart_pb.SetItemQuantityRequest(
            idempotency_key=key("item"),
            cart_id=ids_pb2.CartId(value=cart_id),
            customer_id=ids_pb2.CustomerId(value=customer),
            sku=ids_pb2.Sku(value=sku),
            quantity=quantity,
        ),
        timeout=10,
    )
    return cart_id


def place_order_request(
    customer: str, cart_id: str, payment_method: str, idempotency_key: str
) -> checkout_pb.PlaceOrderRequest:
    return checkout_pb.PlaceOrderRequest(
        idempotency_key=idempotency_key,
        customer_id=ids_pb2.CustomerId(value=customer),
        cart_id=ids_pb2.CartId(value=cart_id),
        payment_method=payment_method,
        shipping_address=ADDRESS,
    )


async def settled_order(clients: Clients, customer: str, order_id: str) -> checkout_pb.Order:
    """The order once its saga has moved it out of PENDING (polled with a deadline)."""
    request = checkout_pb.GetOrderRequest(
        order_id=ids_pb2.OrderId(value=order_id), customer_id=ids_pb2.CustomerId(value=customer)
    )
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            order = (await clients.checkout.GetOrder(request, timeout=10)).order
            if order.status != checkout_pb.ORDER_STATUS_PENDING:
                return order
            await asyncio.sleep(0.2)


async def stock_of(clients: Clients, sku: str) -> inventory_pb.StockLevel:
    """The SKU's stock once nothing is reserved: the saga commits a CONFIRMED order's stock just
    after confirming it, and releases a cancelled one's before cancelling (polled, bounded)."""
    request = inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku))
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            level = (await clients.inventory.GetStock(request, timeout=10)).stock_level
            if level.reserved == 0:
                return level
            await asyncio.sleep(0.2)


async def test_orders_end_confirmed_or_cancelled_with_the_right_reason(clients: Clients) -> None:
    sku = await stock_a_product(clients, on_hand=5, price_minor=1_250)
    customer = f"cust-{uuid.uuid4().hex[:8]}"

    # A good card: CONFIRMED, stock sold, the authorization covers the total.
    cart_id = await cart_with(clients, customer, sku, 2)
    first_key = key("checkout")
    placed = await clients.checkout.PlaceOrder(
        place_order_request(customer, cart_id, "pm_card_visa", first_key), timeout=10
    )
    assert placed.status == checkout_pb.ORDER_STATUS_PENDING
    confirmed = await settled_order(clients, customer, placed.order_id.value)
    assert confirmed.status in PLACED, confirmed
    assert confirmed.subtotal.amount_minor == 2_500
    assert (
        confirmed.total.amount_minor == confirmed.subtotal.amount_minor + confirmed.tax.amount_minor
    )
    assert confirmed.payment.authorized.amount_minor == confirmed.total.amount_minor
    level = await stock_of(clients, sku)
    assert (level.on_hand, level.reserved) == (3, 0)

    # The same key again: the same order, replayed, nothing new.
    replay = await clients.checkout.PlaceOrder(
        place_order_request(customer, cart_id, "pm_card_visa", first_key), timeout=10
    )
    assert (replay.order_id.value, replay.replayed) == (placed.order_id.value, True)

    # A declined card: CANCELLED payment_declined, the units back on the shelf.
    cart_id = await cart_with(clients, customer, sku, 1)
    declined = await clients.checkout.PlaceOrder(
        place_order_request(customer, cart_id, "pm_card_chargeDeclined", key("checkout")),
        timeout=10,
    )
    order = await settled_order(clients, customer, declined.order_id.value)
    assert order.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == checkout_pb.FAILURE_REASON_PAYMENT_DECLINED
    level = await stock_of(clients, sku)
    assert (level.on_hand, level.reserved) == (3, 0)

    # More than the stock: CANCELLED out_of_stock, stock unchanged.
    cart_id = await cart_with(clients, customer, sku, 4)
    short = await clients.checkout.PlaceOrder(
        place_order_request(customer, cart_id, "pm_card_visa", key("checkout")), timeout=10
    )
    order = await settled_order(clients, customer, short.order_id.value)
    assert order.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == checkout_pb.FAILURE_REASON_OUT_OF_STOCK
    level = await stock_of(clients, sku)
    assert (level.on_hand, level.reserved) == (3, 0)

    # The fraud check: CANCELLED fraud_rejected.
    cart_id = await cart_with(clients, customer, sku, 1)
    risky = await clients.checkout.PlaceOrder(
        place_order_request(customer, cart_id, "pm_card_riskLevelHighest", key("checkout")),
        timeout=10,
    )
    order = await settled_order(clients, customer, risky.order_id.value)
    assert order.status == checkout_pb.ORDER_STATUS_CANCELLED
    assert order.failure_reason == checkout_pb.FAILURE_REASON_FRAUD_REJECTED


RACERS = 100


async def test_100_identical_place_orders_make_one_order_one_execution_one_psp_intent(
    clients: Clients, stack: LaunchedStack, database_url: str
) -> None:
    sku = await stock_a_product(clients, on_hand=10, price_minor=700)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    cart_id = await cart_with(clients, customer, sku, 1)
    request = place_order_request(customer, cart_id, "pm_card_visa", key("storm"))
    channels = [grpc.aio.insecure_channel(stack.grpc_address("checkout")) for _ in range(10)]
    stubs: list[Any] = [checkout_grpc.CheckoutServiceStub(channel) for channel in channels]

    async def place(racer: int) -> str:
        try:
            placed = await stubs[racer % len(stubs)].PlaceOrder(request, timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ABORTED:  # ABORTED: the first is still in flight
                raise
            return "in flight"
        order_id: str = placed.order_id.value
        return order_id

    try:
        answers = await asyncio.gather(*(place(racer) for racer in range(RACERS)))
    finally:
        for channel in channels:
            await channel.close()

    order_ids = {answer for answer in answers if answer != "in flight"}
    assert len(order_ids) == 1, answers
    (order_id,) = order_ids
    order = await settled_order(clients, customer, order_id)
    assert order.status in PLACED
    connection = await asyncpg.connect(database_url)
    try:
        orders = await connection.fetchval(
            "SELECT count(*) FROM checkout.orders WHERE customer_id = $1", customer
        )
        executions = await connection.fetchval(
            "SELECT count(*) FROM saga.executions WHERE name = $1", order_id
        )
    finally:
        await connection.close()
    assert (orders, executions) == (1, 1)
    async with httpx.AsyncClient(base_url=stack.url("psp"), timeout=10) as psp:
        listed = await psp.get("/v1/payment_intents", params={"metadata[order_id]": order_id})
    assert listed.status_code == 200, listed.text
    intents = listed.json()["data"]
    assert len(intents) == 1, intents
    assert intents[0]["amount"] == order.total.amount_minor


async def test_killing_the_saga_engine_mid_flight_completes_every_order_once(
    clients: Clients, stack: LaunchedStack
) -> None:
    orders = 12
    sku = await stock_a_product(clients, on_hand=orders, price_minor=900)
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    carts = [await cart_with(clients, customer, sku, 1) for _ in range(orders)]
    placed = await asyncio.gather(
        *(
            clients.checkout.PlaceOrder(
                place_order_request(customer, cart_id, "pm_card_visa", key("kill")), timeout=30
            )
            for cart_id in carts
        )
    )
    killed = "saga-engine exited with signal SIGKILL"
    earlier = sum(killed in line for line in stack.lines)  # the stack is the module's
    kills = 0
    for _ in range(3):  # SIGKILL the engine at whatever step each execution has reached
        pid = stack.pid_of("saga-engine")
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            kills += 1
            await stack.wait_for_lines(killed, earlier + kills)
        await asyncio.sleep(random.uniform(0.2, 1.0))
    assert kills >= 1

    settled = [await settled_order(clients, customer, p.order_id.value) for p in placed]
    assert all(o.status in PLACED for o in settled), [o.status for o in settled]
    level = await stock_of(clients, sku)
    assert (level.on_hand, level.reserved) == (0, 0)  # each reservation committed exactly once
    async with httpx.AsyncClient(base_url=stack.url("psp"), timeout=10) as psp:
        for order in settled:
            listed = await psp.get(
                "/v1/payment_intents", params={"metadata[order_id]": order.order_id.value}
            )
            intents = listed.json()["data"]
            assert len(intents) == 1, (order.order_id.value, intents)
            assert intents[0]["amount"] == order.total.amount_minor


async def test_prefer_wait_answers_with_the_order_once_the_saga_settles_it(
    clients: Clients, stack: LaunchedStack
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    me = shopper.bearer(customer)

    async def check_out(cart_id: str, idempotency_key: str, prefer: str) -> httpx.Response:
        body = {"cart_id": cart_id, "payment_method": "pm_card_visa"}
        headers = me | {"Idempotency-Key": idempotency_key, "Prefer": prefer}
        return await http.post(
            "/v1/checkouts", json=body | {"shipping_address": shopper.ADDRESS}, headers=headers
        )

    # Waiters are woken by checkout's LISTEN (the trigger's NOTIFY), not by a poll.
    await stack.wait_for_line("listening on checkout_order_settled", within=30)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as http:
        sku = await shopper.stocked_sku(http, on_hand=5, price_minor=1_500)
        # The saga engine is stopped (SIGSTOP): the order cannot settle within the wait.
        engine_pid = stack.pid_of("saga-engine")
        assert engine_pid is not None
        os.kill(engine_pid, signal.SIGSTOP)
        try:
            stalled_key = key("stalled")
            started = time.monotonic()
            stalled_cart = await shopper.cart_holding(http, customer, sku, 1)
            stalled = await check_out(stalled_cart, stalled_key, "wait=1")
            assert stalled.status_code == 202, stalled.text
            assert time.monotonic() - started >= 1.0
            assert stalled.headers["Preference-Applied"] == "wait=1"
            assert stalled.json()["status"] == "PENDING"
            order_id = stalled.json()["order_id"]

            # A reader waiting on it is answered when the saga, running again, confirms it.
            read = asyncio.create_task(
                http.get(f"/v1/orders/{order_id}", headers=me | {"Prefer": "wait=10"})
            )
            await asyncio.sleep(1.0)
            assert not read.done()
        finally:
            os.kill(engine_pid, signal.SIGCONT)
        started = time.monotonic()
        settled = await read
        assert settled.status_code == 200, settled.text
        assert settled.headers["Preference-Applied"] == "wait=10"
        assert settled.json()["status"] in ("CONFIRMED", "SHIPPED"), settled.json()
        assert time.monotonic() - started < 9.0  # woken by the settlement, not the end of the wait

        # A replay of the stalled checkout, waiting, now answers the settled order.
        replay = await check_out(stalled_cart, stalled_key, "wait=5")
        assert replay.status_code == 200, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert (replay.json()["order_id"], replay.headers["Preference-Applied"]) == (
            order_id,
            "wait=5",
        )

        # With the engine running, a checkout waiting 5 s is answered with the CONFIRMED order.
        confirmed_key = key("waited")
        cart_id = await shopper.cart_holding(http, customer, sku, 1)
        placed = await check_out(cart_id, confirmed_key, "wait=5")
        assert placed.status_code == 200, placed.text
        assert placed.headers["Preference-Applied"] == "wait=5"
        assert placed.headers["Location"] == f"/v1/orders/{placed.json()['order_id']}"
        order = placed.json()
        assert order["status"] in ("CONFIRMED", "SHIPPED"), order
        assert order["payment"]["authorized"] == order["total"]

        # Its replay under the same Idempotency-Key, waiting too, is the same order, at once.
        started = time.monotonic()
        again = await check_out(cart_id, confirmed_key, "wait=5")
        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Preference-Applied"] == "wait=5"
        assert again.json()["order_id"] == order["order_id"]
        assert again.json()["status"] in ("CONFIRMED", "SHIPPED")
        assert time.monotonic() - started < 5.0

"""The public HTTP API end to end on the real multi-process stack: a customer's checkout through
the gateway reaches CONFIRMED, a declined card and a short stock end CANCELLED with their reasons
and the stock unchanged, and a replayed checkout returns the same order."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.shopper import (
    bearer,
    captured_order,
    cart_holding,
    check_out,
    eventually_one_file,
    settled,
    stock,
    stocked_sku,
)
from tests.support.stack import LaunchedStack

pytestmark = pytest.mark.stack


@pytest.fixture
async def http(stack: LaunchedStack) -> AsyncIterator[httpx.AsyncClient]:
    await stack.wait_for_line("all services SERVING", within=90)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10) as client:
        yield client


async def test_checkouts_through_the_gateway_end_as_the_customer_would_expect(
    http: httpx.AsyncClient, stack: LaunchedStack
) -> None:
    sku = await stocked_sku(http, on_hand=4, price_minor=3_000)
    customer = f"cust-{uuid.uuid4().hex[:8]}"

    cart_id = await cart_holding(http, customer, sku, 1)
    key = f"checkout-{uuid.uuid4().hex}"
    accepted = await check_out(http, customer, cart_id, "pm_card_visa", key)
    assert accepted.status_code == 202, accepted.text
    order_id = accepted.json()["order_id"]
    assert accepted.headers["Location"] == f"/v1/orders/{order_id}"
    order = await settled(http, customer, order_id)
    assert order["status"] in ("CONFIRMED", "SHIPPED"), order  # shipping may already be done
    assert order["payment"]["authorized"] == order["total"]
    assert order["total"]["amount_minor"] == 3_000 + order["tax"]["amount_minor"]

    # Events: OrderPlaced/ShipmentRequested -> relay -> shipping consumer -> carrier ->
    # ShipmentCreated -> shipped and captured; the invoice and the confirmation email are written.
    # (The shipping consumer marks the order shipped, then captures.)
    shipped = await settled(http, customer, order_id, past=("PENDING", "CONFIRMED"))
    assert shipped["status"] == "SHIPPED", shipped
    captured = await captured_order(http, customer, order_id)
    assert captured["payment"]["captured"] == captured["total"]
    await eventually_one_file(stack.data_dir / "documents", order_id)
    await eventually_one_file(stack.data_dir / "email-outbox", order_id)

    replay = await check_out(http, customer, cart_id, "pm_card_visa", key)
    assert replay.status_code == 202, replay.text
    assert replay.json()["order_id"] == order_id
    assert replay.headers["Idempotent-Replayed"] == "true"

    # Another customer cannot see the order.
    answer = await http.get(f"/v1/orders/{order_id}", headers=bearer("someone-else"))
    assert answer.status_code == 404

    cart_id = await cart_holding(http, customer, sku, 1)
    declined = await check_out(http, customer, cart_id, "pm_card_chargeDeclined", uuid.uuid4().hex)
    order = await settled(http, customer, declined.json()["order_id"])
    assert (order["status"], order["failure_reason"]) == ("CANCELLED", "payment_declined")

    before = await stock(http, sku)
    cart_id = await cart_holding(http, customer, sku, 10)
    short = await check_out(http, customer, cart_id, "pm_card_visa", uuid.uuid4().hex)
    order = await settled(http, customer, short.json()["order_id"])
    assert (order["status"], order["failure_reason"]) == ("CANCELLED", "out_of_stock")
    after = await stock(http, sku)
    assert after == before
    assert (after["on_hand"], after["reserved"], after["available"]) == (3, 0, 3)

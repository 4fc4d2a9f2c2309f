"""The public HTTP API end to end on the real multi-process stack: a customer's checkout through
the gateway reaches CONFIRMED, a declined card and a short stock end CANCELLED with their reasons
and the stock unchanged, and a replayed checkout returns the same order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET
from tests.support.stack import LaunchedStack

pytestmark = pytest.mark.stack

SETTLES_WITHIN = 60.0
ADDRESS = {
    "name": "Grace Hopper", "line1": "1 Navy Yard", "city": "Arlington", "postal_code": "22202",
    "country": "US",
}  # fmt: skip


def bearer(subject: str, *scopes: str) -> dict[str, str]:
    token = issue_token(secret=DEV_JWT_SECRET, subject=subject, scopes=scopes)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http(stack: LaunchedStack) -> AsyncIterator[httpx.AsyncClient]:
    await stack.wait_for_line("all services SERVING", within=90)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10) as client:
        yield client


async def stocked_sku(http: httpx.AsyncClient, *, on_hand: int, price_minor: int) -> str:
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    admin = bearer("ops", ADMIN_SCOPE)
    product = {"name": "Teapot", "price": {"amount_minor": price_minor, "currency": "USD"}}
    answer = await http.put(f"/v1/admin/products/{sku}", json=product, headers=admin)
    assert answer.status_code == 200, answer.text
    answer = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": on_hand}, headers=admin)
    assert answer.status_code == 200, answer.text
    return sku


async def cart_holding(http: httpx.AsyncClient, customer: str, sku: str, quantity: int) -> str:
    answer = await http.post("/v1/carts", json={}, headers=bearer(customer))
    assert answer.status_code == 201, answer.text
    cart_id: str = answer.json()["cart_id"]
    answer = await http.put(
        f"/v1/carts/{cart_id}/items/{sku}", json={"quantity": quantity}, headers=bearer(customer)
    )
    assert answer.status_code == 200, answer.text
    return cart_id


async def check_out(
    http: httpx.AsyncClient, customer: str, cart_id: str, card: str, key: str
) -> httpx.Response:
    body = {"cart_id": cart_id, "payment_method": card, "shipping_address": ADDRESS}
    headers = bearer(customer) | {"Idempotency-Key": key}
    return await http.post("/v1/checkouts", json=body, headers=headers)


async def settled(
    http: httpx.AsyncClient, customer: str, order_id: str, *, past: tuple[str, ...] = ("PENDING",)
) -> dict[str, Any]:
    """The order once its status has moved beyond `past` (polled, bounded)."""
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            answer = await http.get(f"/v1/orders/{order_id}", headers=bearer(customer))
            assert answer.status_code == 200, answer.text
            order: dict[str, Any] = answer.json()
            if order["status"] not in past:
                return order
            await asyncio.sleep(0.2)


async def captured_order(http: httpx.AsyncClient, customer: str, order_id: str) -> dict[str, Any]:
    """The order once its payment is captured (polled, bounded)."""
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            answer = await http.get(f"/v1/orders/{order_id}", headers=bearer(customer))
            order: dict[str, Any] = answer.json()
            if order["payment"]["status"] == "CAPTURED":
                return order
            await asyncio.sleep(0.2)


async def eventually_one_file(folder: Path, order_id: str) -> None:
    """Wait until exactly one file under `folder` names or mentions the order."""
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            found = await asyncio.to_thread(files_about, folder, order_id)
            if found:
                assert len(found) == 1, found
                return
            await asyncio.sleep(0.2)


def files_about(folder: Path, order_id: str) -> list[Path]:
    """Files under `folder` whose name or text mentions the order."""
    if not folder.exists():
        return []
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and (order_id in path.name or order_id in path.read_text())
    ]


async def stock(http: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    """The SKU's stock once nothing is reserved (a CONFIRMED order's stock is committed just
    after it is confirmed; polled, bounded)."""
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            answer = await http.get(
                f"/v1/admin/inventory/{sku}", headers=bearer("ops", ADMIN_SCOPE)
            )
            assert answer.status_code == 200, answer.text
            level: dict[str, Any] = answer.json()
            if level["reserved"] == 0:
                return level
            await asyncio.sleep(0.2)


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

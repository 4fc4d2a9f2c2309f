"""The public HTTP API as the end-to-end tests' customers and operator use it: stock a SKU,
fill a cart, check out, and wait for an order (or its stock) to settle, all through the gateway."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET

SETTLES_WITHIN = 60.0
ADDRESS = {
    "name": "Grace Hopper", "line1": "1 Navy Yard", "city": "Arlington", "postal_code": "22202",
    "country": "US",
}  # fmt: skip


def bearer(subject: str, *scopes: str) -> dict[str, str]:
    """Headers carrying a development token for `subject` with `scopes`."""
    token = issue_token(secret=DEV_JWT_SECRET, subject=subject, scopes=scopes)
    return {"Authorization": f"Bearer {token}"}


async def stocked_sku(http: httpx.AsyncClient, *, on_hand: int, price_minor: int) -> str:
    """A new SKU in the catalog at `price_minor` cents with `on_hand` units."""
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    admin = bearer("ops", ADMIN_SCOPE)
    product = {"name": "Teapot", "price": {"amount_minor": price_minor, "currency": "USD"}}
    answer = await http.put(f"/v1/admin/products/{sku}", json=product, headers=admin)
    assert answer.status_code == 200, answer.text
    answer = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": on_hand}, headers=admin)
    assert answer.status_code == 200, answer.text
    return sku


async def cart_holding(http: httpx.AsyncClient, customer: str, sku: str, quantity: int) -> str:
    """A new cart of `customer` holding `quantity` of `sku`."""
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
    """POST /v1/checkouts for the cart, paying with `card`, under idempotency key `key`."""
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

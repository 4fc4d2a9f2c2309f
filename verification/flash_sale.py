"""The flash sale: one SKU with a few units and many times more buyers at the same moment.
Exactly `units` orders may be CONFIRMED (or SHIPPED, once the shipping consumer has them); every
other one ends CANCELLED out_of_stock."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.auth import ADMIN_SCOPE
from verification import customers
from verification.plan import CheckoutPlan

SETTLES_WITHIN = 120.0
SOLD = ("CONFIRMED", "SHIPPED")
SOLD_OUT = "CANCELLED out_of_stock"


@dataclass(frozen=True)
class FlashSale:
    """How the sale ended: each buyer's order status and reason, and the SKU's counts."""

    sku: str
    units: int
    buyers: int
    outcomes: Counter[str]  # "CONFIRMED", "CANCELLED out_of_stock", ...
    stock: dict[str, Any]  # the gateway's {"on_hand", "reserved", "available"}
    unanswered: int  # buyers who never got an order id


def sold_orders(sale: FlashSale) -> int:
    """Orders that got a unit: CONFIRMED, or already SHIPPED."""
    return sum(sale.outcomes[status] for status in SOLD)


def problems(sale: FlashSale) -> list[str]:
    """Every way the sale broke its promise (empty when it kept it)."""
    found = []
    sold = sold_orders(sale)
    if sold != sale.units:
        found.append(f"{sold} orders CONFIRMED or SHIPPED for {sale.units} units")
    sold_out = sale.outcomes[SOLD_OUT]
    if sold_out != sale.buyers - sale.units:
        found.append(f"{sold_out} CANCELLED out_of_stock, expected {sale.buyers - sale.units}")
    others = {k: n for k, n in sale.outcomes.items() if k not in (*SOLD, SOLD_OUT)}
    if others:
        found.append(f"other outcomes: {others}")
    if sale.unanswered:
        found.append(f"{sale.unanswered} buyers never got an order")
    counts = (sale.stock.get("on_hand"), sale.stock.get("reserved"), sale.stock.get("available"))
    if counts != (0, 0, 0):
        found.append(f"stock after the sale (on hand, reserved, available) = {counts}, not 0s")
    return found


async def _final_status(client: httpx.AsyncClient, customer: str, order_id: str) -> str:
    async with asyncio.timeout(SETTLES_WITHIN):
        while True:
            answer = await client.get(f"/v1/orders/{order_id}", headers=customers.bearer(customer))
            if answer.status_code == 200 and answer.json()["status"] != "PENDING":
                order = answer.json()
                reason = order.get("failure_reason")
                return f"{order['status']} {reason}" if reason else str(order["status"])
            await asyncio.sleep(0.5)


async def run_flash_sale(gateway_url: str, *, units: int, buyers: int) -> FlashSale:
    """Stock `units` of a new SKU, let `buyers` check out one each at once, wait for all."""
    sku = f"FLASH-{uuid.uuid4().hex[:10]}"
    traffic = customers.Traffic()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        await customers.stock_catalog(
            client, traffic, prices={sku: 4_999}, initial_stock={sku: units}
        )
        plans = [
            CheckoutPlan(
                index=n,
                customer_id=f"flash-{sku}-{n:04d}",
                idempotency_key=f"flash-{uuid.uuid4().hex}",
                lines=((sku, 1),),
                card="pm_card_visa",
                storm=2,  # every buyer double-clicks
                timeout_seconds=10.0,
                replay_after_seconds=None,
            )
            for n in range(buyers)
        ]
        results = await asyncio.gather(*(customers.check_out(client, traffic, p) for p in plans))
        answered = [(r.plan.customer_id, order_id) for r in results for order_id in r.order_ids]
        statuses = await asyncio.gather(*(_final_status(client, c, o) for c, o in answered))
        level = await client.get(
            f"/v1/admin/inventory/{sku}", headers=customers.bearer("ops", ADMIN_SCOPE)
        )
        level.raise_for_status()
    return FlashSale(
        sku=sku,
        units=units,
        buyers=buyers,
        outcomes=Counter(statuses),
        stock=level.json(),
        unanswered=sum(not r.order_ids for r in results),
    )

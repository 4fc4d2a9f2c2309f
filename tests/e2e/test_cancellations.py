"""Cancellations end to end on the real multi-process stack, seen through the public API and
the PSP's own records: whatever cancels an order (the customer at any moment, the timeout sweep
behind a saga that stopped), it ends holding no money and no stock; a cancel that loses the
race to shipping is refused and the order is charged in full."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_database
from tests.support.shopper import (
    bearer,
    cart_holding,
    check_out,
    settled,
    stock,
    stocked_sku,
)
from tests.support.stack import LaunchedStack, running_stack

pytestmark = pytest.mark.stack

WITHIN = 90.0


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A database for one stack only: its timeout sweep must see no other test's orders."""
    async with fresh_database(postgres_server_url) as url:
        yield url


async def psp_intents(stack: LaunchedStack, order_id: str) -> list[dict[str, Any]]:
    """The PSP's own record of the order's payment intents."""
    async with httpx.AsyncClient(base_url=stack.url("psp"), timeout=10) as psp:
        answer = await psp.get(
            "/v1/payment_intents", params={"metadata[order_id]": order_id, "limit": "100"}
        )
    answer.raise_for_status()
    intents: list[dict[str, Any]] = answer.json()["data"]
    return intents


def holds_nothing(intents: list[dict[str, Any]]) -> bool:
    """Nothing authorized and not voided, nothing captured and not refunded."""
    return all(
        intent["status"] != "requires_capture"
        and intent.get("amount_received", 0) == intent.get("amount_refunded", 0)
        for intent in intents
    )


async def until(check: Any, within: float = WITHIN) -> None:
    """Poll an async predicate until it holds (bounded)."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def test_customer_cancels_at_rising_delays_end_cancelled_and_whole_or_shipped_and_charged(
    stack: LaunchedStack,
) -> None:
    await stack.wait_for_line("all services SERVING", within=90)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10) as http:
        sku = await stocked_sku(http, on_hand=100, price_minor=1_000)
        customer = f"cust-{uuid.uuid4().hex[:8]}"
        orders = []
        for _ in range(16):
            cart_id = await cart_holding(http, customer, sku, 3)
            accepted = await check_out(http, customer, cart_id, "pm_card_visa", uuid.uuid4().hex)
            assert accepted.status_code == 202, accepted.text
            orders.append(accepted.json()["order_id"])

        async def cancel_after(order_id: str, delay: float) -> int:
            await asyncio.sleep(delay)
            headers = bearer(customer) | {"Idempotency-Key": uuid.uuid4().hex}
            answer = await http.post(f"/v1/orders/{order_id}/cancel", json={}, headers=headers)
            assert answer.status_code in (202, 409), answer.text
            return answer.status_code

        answers = await asyncio.gather(
            *(cancel_after(order_id, 0.1 * n) for n, order_id in enumerate(orders))
        )
        ends = [
            await settled(http, customer, order_id, past=("PENDING", "CONFIRMED"))
            for order_id in orders
        ]

        shipped_units = 0
        for order, answer in zip(ends, answers, strict=True):
            intents = await psp_intents(stack, order["order_id"])
            if order["status"] == "CANCELLED":
                assert answer == 202, order
                await until(lambda o=order: _holds_nothing_now(stack, o["order_id"]))
            else:
                # Refused because it shipped first: charged its whole total, nothing refunded.
                assert (order["status"], answer) == ("SHIPPED", 409), order
                shipped_units += 3
                await until(lambda o=order: _captured_in_full(stack, o))
            assert len([i for i in intents if i["status"] != "canceled"]) <= 1, intents
        # Every cancelled order's three units are back on the shelf, sold ones included.
        level = await stock(http, sku)
        assert (level["on_hand"], level["reserved"]) == (100 - shipped_units, 0), level


async def _holds_nothing_now(stack: LaunchedStack, order_id: str) -> bool:
    return holds_nothing(await psp_intents(stack, order_id))


async def _captured_in_full(stack: LaunchedStack, order: dict[str, Any]) -> bool:
    intents = await psp_intents(stack, order["order_id"])
    captured = sum(i.get("amount_received", 0) - i.get("amount_refunded", 0) for i in intents)
    return bool(captured == order["total"]["amount_minor"])


async def test_an_order_the_timeout_sweep_cancels_behind_a_stopped_saga_keeps_no_hold_or_stock(
    own_database: str, tmp_path: Path
) -> None:
    # The saga engine is stopped once the stock is held and the authorization is on its way to
    # a slow PSP, as an execution that timed out or parked would be; the order's deadline is
    # short, so the timeout sweep cancels it. Nothing but the OrderCancelled consumers (and
    # payment's reconciliation, for the authorization that lands afterwards) is left to give
    # anything back. Before them, the hold and the reservation stayed.
    settings = {
        "ORDER_TIMEOUT_SECONDS": "2",
        "TIMEOUT_SWEEP_INTERVAL_SECONDS": "0.5",
        "RECONCILE_INTERVAL_SECONDS": "2",
        "CONSUMER_UNAVAILABLE_MAX_SECONDS": "3",
    }
    async with running_stack(own_database, tmp_path, settings) as stack:
        await stack.wait_for_line("all services SERVING", within=90)
        async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10) as http:
            sku = await stocked_sku(http, on_hand=10, price_minor=2_000)
            customer = f"cust-{uuid.uuid4().hex[:8]}"
            cart_id = await cart_holding(http, customer, sku, 3)
            async with httpx.AsyncClient(base_url=stack.url("psp"), timeout=10) as psp:
                (await psp.put("/admin/faults", json={"latency_ms": 1_500})).raise_for_status()
            accepted = await check_out(http, customer, cart_id, "pm_card_visa", uuid.uuid4().hex)
            assert accepted.status_code == 202, accepted.text
            order_id = accepted.json()["order_id"]
            await until(lambda: _reserved(http, sku, 3), within=30)
            engine = stack.pid_of("saga-engine")
            assert engine is not None
            os.kill(engine, signal.SIGSTOP)
            try:
                order = await settled(http, customer, order_id)
                assert (order["status"], order["failure_reason"]) == ("CANCELLED", "timeout")
                await until(lambda: _shelf_whole(http, sku, 10))
                await until(lambda: _holds_nothing_now(stack, order_id))
            finally:
                os.kill(engine, signal.SIGCONT)


async def _reserved(http: httpx.AsyncClient, sku: str, units: int) -> bool:
    answer = await http.get(f"/v1/admin/inventory/{sku}", headers=bearer("ops", "admin"))
    return bool(answer.json()["reserved"] == units)


async def _shelf_whole(http: httpx.AsyncClient, sku: str, on_hand: int) -> bool:
    answer = await http.get(f"/v1/admin/inventory/{sku}", headers=bearer("ops", "admin"))
    level = answer.json()
    return bool((level["on_hand"], level["reserved"], level["available"]) == (on_hand, 0, on_hand))

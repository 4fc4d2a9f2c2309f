"""Customers through the public HTTP API: catalog set-up by an admin, then carts and checkouts
sent as retry storms (the same Idempotency-Key at once, again after timeouts, and replayed),
and some customers cancelling their order a while after it was placed."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET
from verification.plan import CheckoutPlan
from verification.snapshot import (
    CANCEL_ACCEPTED,
    CANCEL_GAVE_UP,
    CANCEL_REFUSED,
    CustomerCancel,
)

ADDRESS = {
    "name": "Chaos Monkey", "line1": "1 Infinite Loop", "city": "Cupertino",
    "postal_code": "95014", "country": "US",
}  # fmt: skip
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
GIVE_UP_AFTER = 90.0  # seconds a customer keeps trying one request through faults


def bearer(subject: str, *scopes: str) -> dict[str, str]:
    """An Authorization header for `subject`, signed with the development secret."""
    token = issue_token(secret=DEV_JWT_SECRET, subject=subject, scopes=scopes, ttl_seconds=7200)
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Traffic:
    """What the clients saw, counted by kind, and what they could not get done."""

    answers: Counter[str] = field(default_factory=Counter)
    abandoned: list[str] = field(default_factory=list)

    def saw(self, kind: str) -> None:
        """Count one answer (a status code, "timeout", "connection error")."""
        self.answers[kind] += 1


@dataclass
class CheckoutResult:
    """One customer's checkout as the client saw it."""

    plan: CheckoutPlan
    cart_id: str | None = None
    order_ids: set[str] = field(default_factory=set)
    replayed: int = 0
    cancel: CustomerCancel | None = None


async def _send(
    client: httpx.AsyncClient,
    traffic: Traffic,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str],
    body: Any = None,
    patience: float = 10.0,
    expect: frozenset[int],
) -> httpx.Response | None:
    """Send until an expected answer, retrying what a careful client retries; None: gave up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GIVE_UP_AFTER
    pause = 0.05
    while loop.time() < deadline:
        try:
            answer = await client.request(
                method, path, json=body, headers=headers, timeout=patience
            )
        except httpx.TimeoutException:
            traffic.saw("timeout")
            patience = min(patience * 2, 10.0)  # sent again, with more patience each time
        except httpx.TransportError:
            traffic.saw("connection error")
        else:
            traffic.saw(str(answer.status_code))
            if answer.status_code in expect:
                return answer
            if answer.status_code not in RETRYABLE_STATUSES:
                traffic.abandoned.append(f"{method} {path}: {answer.status_code} {answer.text}")
                return None
            retry_after = answer.headers.get("Retry-After")
            if retry_after and retry_after.isdigit():
                pause = max(pause, min(float(retry_after), 1.0))
        await asyncio.sleep(random.uniform(0, pause))
        pause = min(pause * 2, 1.0)
    traffic.abandoned.append(f"{method} {path}: no answer within {GIVE_UP_AFTER:.0f}s")
    return None


async def stock_catalog(
    client: httpx.AsyncClient,
    traffic: Traffic,
    *,
    prices: Mapping[str, int],
    initial_stock: Mapping[str, int],
) -> None:
    """Put every SKU in the catalog and on the shelf, as an admin."""
    admin = bearer("chaos-ops", ADMIN_SCOPE)
    for sku, price in prices.items():
        product = {"name": f"Chaos {sku}", "price": {"amount_minor": price, "currency": "USD"}}
        if await _send(client, traffic, "PUT", f"/v1/admin/products/{sku}", headers=admin,
                       body=product, expect=frozenset({200})) is None:  # fmt: skip
            raise RuntimeError(f"could not list {sku}: {traffic.abandoned[-1]}")
        level = {"on_hand": initial_stock[sku]}
        if await _send(client, traffic, "PUT", f"/v1/admin/inventory/{sku}", headers=admin,
                       body=level, expect=frozenset({200})) is None:  # fmt: skip
            raise RuntimeError(f"could not stock {sku}: {traffic.abandoned[-1]}")


async def check_out(
    client: httpx.AsyncClient, traffic: Traffic, plan: CheckoutPlan
) -> CheckoutResult:
    """Fill a cart and check it out as a retry storm: `storm` identical requests at once."""
    result = CheckoutResult(plan)
    cart_id = await fill_cart(client, traffic, plan)
    if cart_id is None:
        return result
    result.cart_id = cart_id

    async def one_request() -> None:
        answer = await post_checkout(client, traffic, plan, cart_id)
        if answer is not None:
            result.order_ids.add(answer.json()["order_id"])
            result.replayed += answer.headers.get("Idempotent-Replayed") == "true"

    async with asyncio.TaskGroup() as storm:
        for _ in range(plan.storm):
            storm.create_task(one_request())

    async def replay() -> None:
        if plan.replay_after_seconds is not None:
            await asyncio.sleep(plan.replay_after_seconds)
            await one_request()

    async def cancel() -> None:
        if plan.cancel_after_seconds is not None and result.order_ids:
            await asyncio.sleep(plan.cancel_after_seconds)
            order_id = min(result.order_ids)
            result.cancel = await cancel_order(client, traffic, plan, order_id)

    async with asyncio.TaskGroup() as later:
        later.create_task(replay())
        later.create_task(cancel())
    return result


async def fill_cart(client: httpx.AsyncClient, traffic: Traffic, plan: CheckoutPlan) -> str | None:
    """A new cart holding the plan's lines; None when the client gave up."""
    created = await _send(client, traffic, "POST", "/v1/carts", headers=bearer(plan.customer_id),
                          body={}, expect=frozenset({201}))  # fmt: skip
    if created is None:
        return None
    cart_id: str = created.json()["cart_id"]
    return cart_id if await put_lines(client, traffic, plan, cart_id) else None


async def put_lines(
    client: httpx.AsyncClient, traffic: Traffic, plan: CheckoutPlan, cart_id: str
) -> bool:
    """Set each of the plan's lines in the cart; False when the client gave up."""
    for sku, quantity in plan.lines:
        added = await _send(client, traffic, "PUT", f"/v1/carts/{cart_id}/items/{sku}",
                            headers=bearer(plan.customer_id), body={"quantity": quantity},
                            expect=frozenset({200}))  # fmt: skip
        if added is None:
            return False
    return True


async def post_checkout(
    client: httpx.AsyncClient,
    traffic: Traffic,
    plan: CheckoutPlan,
    cart_id: str,
    *,
    expect: frozenset[int] = frozenset({202}),
) -> httpx.Response | None:
    """One `POST /v1/checkouts` of the cart under the plan's Idempotency-Key, sent until an
    expected answer; None: the client gave up."""
    headers = bearer(plan.customer_id) | {"Idempotency-Key": plan.idempotency_key}
    body = {"cart_id": cart_id, "payment_method": plan.card, "shipping_address": ADDRESS}
    return await _send(client, traffic, "POST", "/v1/checkouts", headers=headers, body=body,
                       patience=plan.timeout_seconds, expect=expect)  # fmt: skip


async def get_order(
    client: httpx.AsyncClient, traffic: Traffic, customer_id: str, order_id: str
) -> httpx.Response | None:
    """`GET /v1/orders/{id}` as its customer until a 200 or a 404; None: the client gave up."""
    return await _send(client, traffic, "GET", f"/v1/orders/{order_id}",
                       headers=bearer(customer_id), expect=frozenset({200, 404}))  # fmt: skip


async def _order_status(
    client: httpx.AsyncClient, traffic: Traffic, headers: Mapping[str, str], order_id: str
) -> str | None:
    answer = await _send(client, traffic, "GET", f"/v1/orders/{order_id}", headers=headers,
                         expect=frozenset({200}))  # fmt: skip
    return None if answer is None else str(answer.json()["status"])


async def cancel_order(
    client: httpx.AsyncClient, traffic: Traffic, plan: CheckoutPlan, order_id: str
) -> CustomerCancel:
    """Ask to cancel as a careful client: 202 is final; a 409 is final once the order reads
    SHIPPED, otherwise (in flight, just confirmed) the same request is sent again."""
    me = bearer(plan.customer_id)
    headers = me | {"Idempotency-Key": f"cancel-{plan.idempotency_key}"}
    answers: list[str] = []

    def ended(outcome: str, status: str | None) -> CustomerCancel:
        return CustomerCancel(customer_id=plan.customer_id, order_id=order_id, outcome=outcome,
                              answered_status=status, answers=tuple(answers))  # fmt: skip

    loop = asyncio.get_running_loop()
    deadline = loop.time() + GIVE_UP_AFTER
    while loop.time() < deadline:
        answer = await _send(client, traffic, "POST", f"/v1/orders/{order_id}/cancel",
                             headers=headers, body={},
                             expect=frozenset({202, 409}))  # fmt: skip
        if answer is None:
            break
        if answer.status_code == 202:
            accepted = str(answer.json()["status"])
            answers.append(f"202 {accepted}")
            return ended(CANCEL_ACCEPTED, accepted)
        answers.append(f"409 {str(answer.json().get('type', '')).rsplit('/', 1)[-1]}")
        if await _order_status(client, traffic, me, order_id) == "SHIPPED":
            return ended(CANCEL_REFUSED, "SHIPPED")
        await asyncio.sleep(random.uniform(0.2, 1.0))
    return ended(CANCEL_GAVE_UP, None)

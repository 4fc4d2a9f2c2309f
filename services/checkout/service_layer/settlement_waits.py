"""Reading an order once it has left PENDING: a caller may wait a few seconds for the saga to
settle the order instead of polling for it (GetOrder's `wait`, the gateway's `Prefer: wait`).

Waiting costs no query: every waiter of an order parks on a watch of its id in one registry
per process, fed by one LISTEN (the orders table's trigger notifies each settlement when it
commits). The watch is taken before the first read, so a settlement between that read and
the wait still wakes it. While the LISTEN is down nothing wakes a watch but the lost
connection itself, so waiters then look again every `poll_seconds` until it is back. When the
process shuts down (`stop`), every waiter reads once more and answers, so draining is quick.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from marketplace_platform.notifications import KeyedWakeups
from services.checkout.domain.order import OrderStatus
from services.checkout.service_layer import orders
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.orders import OrderView

POLL_SECONDS_WITHOUT_LISTEN = 1.0


@dataclass(frozen=True)
class SettlementWaits:
    """The process's waiters by order id, and whether the LISTEN that wakes them is up."""

    wakeups: KeyedWakeups
    listening: asyncio.Event
    poll_seconds: float = POLL_SECONDS_WITHOUT_LISTEN
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """End every wait now and from now on (the process is stopping): each reads once more."""
        self.stopped.set()
        self.wakeups.wake_all()


async def get_order_once_settled(
    order_id: uuid.UUID,
    customer_id: str,
    *,
    within: float,
    waits: SettlementWaits,
    deps: CheckoutDeps,
) -> OrderView:
    """The customer's order as soon as it is not PENDING, or as it stands after `within` s.
    Read from the writer: the notification comes from it, and a lagging reader would answer
    PENDING for an order that has settled."""
    loop = asyncio.get_running_loop()
    until = loop.time() + within
    with waits.wakeups.watch(str(order_id)) as watch:
        view = await orders.get_order(order_id, customer_id, deps=deps, fresh=True)
        while view.order.status is OrderStatus.PENDING and not waits.stopped.is_set():
            left = until - loop.time()
            if left <= 0:
                break
            polling = not waits.listening.is_set()
            woken = await watch.wait(min(left, waits.poll_seconds) if polling else left)
            if not woken and not polling:
                break  # nothing settled it while the LISTEN was up: it stands as it was read
            view = await orders.get_order(order_id, customer_id, deps=deps, fresh=True)
    return view

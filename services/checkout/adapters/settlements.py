"""Where orders' settlements are heard: one LISTEN per process on the channel the orders
table's trigger (migration 0003) notifies with an order's id when it leaves PENDING."""

from __future__ import annotations

from marketplace_platform.notifications import KeyedWakeups, Listener

SETTLED_CHANNEL = "checkout_order_settled"


def settlement_listener(database_url: str, wakeups: KeyedWakeups) -> Listener:
    """The LISTEN that wakes `wakeups`' waiters of each settled order id."""
    return Listener(database_url, SETTLED_CHANNEL, wakeups)

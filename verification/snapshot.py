"""What the invariant checker reads: a plain snapshot of the databases, the PSP and the clients.

Collected once the system has settled (verification.collect); built by hand in unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TERMINAL_STATUSES = frozenset({"CONFIRMED", "CANCELLED", "SHIPPED"})
CONFIRMED_STATUSES = frozenset({"CONFIRMED", "SHIPPED"})
LIVE_INTENT_STATUSES = frozenset({"requires_capture", "succeeded"})


@dataclass(frozen=True, kw_only=True)
class OrderLine:
    """One line of an order as checkout stored it."""

    sku: str
    merchant_id: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class Order:
    """One order row from `checkout.orders` with its lines."""

    order_id: str
    customer_id: str
    cart_id: str
    status: str
    failure_reason: str | None
    total_minor: int  # subtotal + tax; the most any authorization may hold
    lines: tuple[OrderLine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class StockLevel:
    """One SKU's counts from `inventory.stock_items`."""

    sku: str
    on_hand: int
    reserved: int
    sold: int

    @property
    def available(self) -> int:
        """Units that can still be reserved."""
        return self.on_hand - self.reserved


@dataclass(frozen=True, kw_only=True)
class Intent:
    """One PSP payment intent, as the simulator's own listing shows it (the ground truth)."""

    intent_id: str
    order_id: str | None
    status: str
    amount: int
    amount_capturable: int
    amount_received: int
    amount_refunded: int = 0


@dataclass(frozen=True, kw_only=True)
class ClientCheckout:
    """What one customer's checkout attempts saw: the order ids answered under one key."""

    customer_id: str
    idempotency_key: str
    cart_id: str
    order_ids: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class MessageFlow:
    """The event pipeline after settling: undelivered outbox rows and queue depths."""

    unpublished_outbox: Mapping[str, int]  # schema -> rows never published
    queue_depths: Mapping[str, int]  # non-DLQ queue -> messages still in it
    dead_letters: Mapping[str, int]  # DLQ -> messages parked in it


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything the invariants are checked against."""

    orders: tuple[Order, ...]
    client_checkouts: tuple[ClientCheckout, ...]
    initial_stock: Mapping[str, int]
    stock: tuple[StockLevel, ...]
    audit_discrepancies: tuple[str, ...]
    intents: tuple[Intent, ...]
    reconciliation_ran: bool
    running_sagas: tuple[str, ...] = ()  # execution names still RUNNING after settling
    settle_seconds: float = 0.0  # how long the checker waited for orders to settle
    # order id -> parcels booked (CREATED shipments); None: not checked, with the reason why
    shipments: Mapping[str, int] | None = None
    shipments_not_checked: str = "no shipping consumer in the stack yet"
    message_flow: MessageFlow | None = None
    message_flow_not_checked: str = "no outbox relay and queues in the stack yet"
    extra: Mapping[str, str] = field(default_factory=dict)

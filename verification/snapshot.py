"""What the invariant checker reads: a plain snapshot of the databases, the PSP and the clients.

Collected once the system has settled (verification.collect); built by hand in unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TERMINAL_STATUSES = frozenset({"CONFIRMED", "CANCELLED", "SHIPPED"})
CONFIRMED_STATUSES = frozenset({"CONFIRMED", "SHIPPED"})
# What a customer's cancellation came to, as the client saw it.
CANCEL_ACCEPTED = "accepted"  # 202: the order is CANCELLED, or will be once its saga compensates
CANCEL_REFUSED = "refused"  # 409, and the order was SHIPPED by then
CANCEL_GAVE_UP = "gave up"  # no final answer within the client's patience


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
    created: int = 0  # seconds since the epoch, on the PSP's clock

    @property
    def held(self) -> int:
        """Authorized and neither captured nor voided."""
        return self.amount_capturable if self.status == "requires_capture" else 0

    @property
    def kept(self) -> int:
        """Captured and not refunded."""
        return self.amount_received - self.amount_refunded

    @property
    def live(self) -> bool:
        """Whether the intent still holds or keeps any of the customer's money."""
        return self.held > 0 or self.kept > 0


@dataclass(frozen=True, kw_only=True)
class ClientCheckout:
    """What one customer's checkout attempts saw: the order ids answered under one key."""

    customer_id: str
    idempotency_key: str
    cart_id: str
    order_ids: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class StoredKey:
    """Checkout's own idempotency record of one (customer, key)."""

    customer_id: str
    key: str
    state: str  # STARTED or COMPLETED
    order_id: str | None  # the order its stored response names


@dataclass(frozen=True, kw_only=True)
class CustomerCancel:
    """One customer's `POST /v1/orders/{id}/cancel`, and every answer it got."""

    customer_id: str
    order_id: str
    outcome: str  # CANCEL_ACCEPTED, CANCEL_REFUSED or CANCEL_GAVE_UP
    answered_status: str | None  # the order's status in the final answer (202) or read (409)
    answers: tuple[str, ...] = ()  # "202 CANCELLED", "503", "409 order-shipped", ...


@dataclass(frozen=True, kw_only=True)
class CarrierBooking:
    """One parcel at the carrier (its own bookings file), called back or still live."""

    shipment_id: str
    order_id: str
    merchant_id: str
    called_back: bool = False


@dataclass(frozen=True, kw_only=True)
class QueuedMessage:
    """A message still on a queue or parked in a DLQ after settling."""

    queue: str
    message_id: str
    dead_letter: bool  # on a DLQ
    describes: str = ""  # its event type and aggregate, when the body says


@dataclass(frozen=True, kw_only=True)
class InjectedPoison:
    """A message no consumer can process, put on a queue by the run itself."""

    queue: str
    message_id: str


@dataclass(frozen=True, kw_only=True)
class MessageFlow:
    """The event pipeline after settling: undelivered outbox rows, queues and DLQs."""

    unpublished_outbox: Mapping[str, int]  # schema -> rows never published
    queue_depths: Mapping[str, int]  # non-DLQ queue -> messages still in it
    dead_letter_queues: tuple[str, ...] = ()  # every declared DLQ, the empty ones too
    messages: tuple[QueuedMessage, ...] = ()  # every message left, on a queue or a DLQ

    @property
    def dead_letters(self) -> tuple[QueuedMessage, ...]:
        """The messages parked in DLQs."""
        return tuple(m for m in self.messages if m.dead_letter)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything the invariants are checked against."""

    orders: tuple[Order, ...]
    client_checkouts: tuple[ClientCheckout, ...]
    initial_stock: Mapping[str, int]
    stock: tuple[StockLevel, ...]
    audit_discrepancies: tuple[str, ...]
    # The PSP's intents as listed after settling and BEFORE the harness's own
    # ReconcilePayments: the money each order holds without the checker's help.
    intents: tuple[Intent, ...]
    # Intents holding an authorization in that listing that the harness's ReconcilePayments
    # then released: a figure for the report (the holds themselves are violations already).
    released_by_reconciliation: tuple[str, ...] = ()
    stored_keys: tuple[StoredKey, ...] = ()  # checkout's idempotency records of the run's keys
    cancels: tuple[CustomerCancel, ...] = ()
    running_sagas: tuple[str, ...] = ()  # execution names still RUNNING after settling
    settle_seconds: float = 0.0  # how long the checker waited for orders to settle
    # What the carrier booked (its own file); None: not checked, with the reason why.
    bookings: tuple[CarrierBooking, ...] | None = None
    bookings_not_checked: str = "no carrier bookings file"
    message_flow: MessageFlow | None = None
    message_flow_not_checked: str = "no outbox relay and queues in the stack yet"
    injected_poison: tuple[InjectedPoison, ...] = ()

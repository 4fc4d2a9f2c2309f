"""The email consumer's handlers: a confirmation per OrderPlaced, a notice per OrderCancelled.

Each email's message id is made of the order id and its kind, so the local outbox writes one
file per order and kind however often the event arrives. Customers are opaque ids (the JWT
subject); until a customer profile service exists, the recipient is `<customer_id>@<domain>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.events.v1 import order_events_pb2
from marketplace_platform.db import UnitOfWork
from marketplace_platform.mailer import Mailer, OutgoingEmail
from workers.consumers.consumer import DeliveredEvent, Handler
from workers.consumers.documents import format_money

CONSUMER = "email"


@dataclass(frozen=True)
class EmailDeps:
    """The mailer and who the emails are from."""

    mailer: Mailer
    sender: str
    recipient_domain: str


def recipient(customer_id: str, domain: str) -> str:
    """The customer's address (a stand-in until customer profiles exist)."""
    local = "".join(c if c.isalnum() or c in "._-" else "_" for c in customer_id)
    return f"{local}@{domain}"


def confirmation(placed: order_events_pb2.OrderPlaced, deps: EmailDeps) -> OutgoingEmail:
    """The order confirmation email."""
    rows = [
        f"  {item.quantity} x {item.name} ({item.sku.value})  {format_money(item.line_total)}"
        for item in placed.lines
    ]
    body = "\n".join(
        [
            f"Thank you for your order {placed.order_id.value}.",
            "",
            *rows,
            "",
            f"Subtotal: {format_money(placed.subtotal)}",
            f"Tax:      {format_money(placed.tax)}",
            f"Total:    {format_money(placed.total)}",
            "",
            f"Shipping to {placed.shipping_address.name}, {placed.shipping_address.city}.",
        ]
    )
    return OutgoingEmail(
        message_id=f"order-{placed.order_id.value}-confirmation",
        sender=deps.sender,
        recipient=recipient(placed.customer_id.value, deps.recipient_domain),
        subject=f"Your order {placed.order_id.value} is confirmed",
        text_body=body + "\n",
    )


def cancellation(cancelled: order_events_pb2.OrderCancelled, deps: EmailDeps) -> OutgoingEmail:
    """The cancellation notice email."""
    reason = checkout_pb.FailureReason.Name(cancelled.failure_reason)
    reason = reason.removeprefix("FAILURE_REASON_").lower().replace("_", " ")
    return OutgoingEmail(
        message_id=f"order-{cancelled.order_id.value}-cancelled",
        sender=deps.sender,
        recipient=recipient(cancelled.customer_id.value, deps.recipient_domain),
        subject=f"Your order {cancelled.order_id.value} was cancelled",
        text_body=(
            f"Your order {cancelled.order_id.value} was cancelled ({reason}).\n"
            f"You have not been charged for it ({format_money(cancelled.total)}).\n"
        ),
    )


def handlers(deps: EmailDeps) -> Mapping[str, Handler]:
    """The email consumer's handler per event type."""

    async def on_order_placed(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, order_events_pb2.OrderPlaced)
        await deps.mailer.send(confirmation(event.payload, deps))

    async def on_order_cancelled(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, order_events_pb2.OrderCancelled)
        await deps.mailer.send(cancellation(event.payload, deps))

    return {
        order_events_pb2.OrderPlaced.DESCRIPTOR.full_name: on_order_placed,
        order_events_pb2.OrderCancelled.DESCRIPTOR.full_name: on_order_cancelled,
    }

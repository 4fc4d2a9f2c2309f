"""The invoice consumer's handlers: an invoice per OrderPlaced, a credit note per refund.

Documents are rendered only from the event (issue date = the event's occurred_at), so a
redelivery renders the same bytes, and they are written with `put_if_absent` under keys made
of the order id (and the refund's operation id): a document, once written, is never replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from marketplace.events.v1 import order_events_pb2, payment_events_pb2
from marketplace_platform.db import UnitOfWork
from marketplace_platform.object_store import ObjectStore, sha256_hex
from workers.consumers.consumer import DeliveredEvent, Handler
from workers.consumers.documents import canonical_json, line, money

log = logging.getLogger(__name__)

CONSUMER = "invoice"
CONTENT_TYPE = "application/json"


def invoice_key(order_id: str) -> str:
    """Where an order's invoice lives."""
    return f"invoices/{order_id}.json"


def credit_note_key(order_id: str, operation_id: str) -> str:
    """Where a refund's credit note lives."""
    return f"credit-notes/{order_id}/{operation_id}.json"


def render_invoice(event: DeliveredEvent) -> bytes:
    """The invoice of a confirmed order, from its OrderPlaced event only."""
    placed = event.payload
    assert isinstance(placed, order_events_pb2.OrderPlaced)
    address = placed.shipping_address
    return canonical_json(
        {
            "document": "invoice",
            "invoice_number": f"INV-{placed.order_id.value}",
            "issued_at": event.occurred_at.isoformat(),
            "order_id": placed.order_id.value,
            "customer_id": placed.customer_id.value,
            "payment_id": placed.payment_id.value,
            "bill_to": {
                "name": address.name,
                "line1": address.line1,
                "city": address.city,
                "postal_code": address.postal_code,
                "country": address.country,
            },
            "lines": [line(item) for item in placed.lines],
            "subtotal": money(placed.subtotal),
            "tax": money(placed.tax),
            "total": money(placed.total),
        }
    )


def render_credit_note(event: DeliveredEvent) -> bytes:
    """A credit note for one refund of an invoiced order."""
    refunded = event.payload
    assert isinstance(refunded, payment_events_pb2.PaymentRefunded)
    return canonical_json(
        {
            "document": "credit_note",
            "credit_note_number": f"CN-{refunded.operation_id}",
            "invoice_number": f"INV-{refunded.order_id.value}",
            "issued_at": event.occurred_at.isoformat(),
            "order_id": refunded.order_id.value,
            "customer_id": refunded.customer_id.value,
            "amount": money(refunded.amount),
            "total_refunded": money(refunded.total_refunded),
        }
    )


async def write_once(store: ObjectStore, key: str, body: bytes) -> None:
    """Write the document unless it exists; a different existing one is reported, not replaced."""
    result = await store.put_if_absent(key, body, content_type=CONTENT_TYPE)
    if result.created:
        return
    existing = await store.get(key)
    if existing is not None and sha256_hex(existing) != result.sha256:
        log.error("%s exists with other content; kept the first document", key)


def handlers(store: ObjectStore) -> Mapping[str, Handler]:
    """The invoice consumer's handler per event type."""

    async def on_order_placed(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, order_events_pb2.OrderPlaced)
        await write_once(store, invoice_key(event.payload.order_id.value), render_invoice(event))

    async def on_payment_refunded(event: DeliveredEvent, uow: UnitOfWork) -> None:
        refunded = event.payload
        assert isinstance(refunded, payment_events_pb2.PaymentRefunded)
        key = credit_note_key(refunded.order_id.value, refunded.operation_id)
        await write_once(store, key, render_credit_note(event))

    return {
        order_events_pb2.OrderPlaced.DESCRIPTOR.full_name: on_order_placed,
        payment_events_pb2.PaymentRefunded.DESCRIPTOR.full_name: on_payment_refunded,
    }

"""Checkout's and payment's events as the consumers receive them, built by the outbox writer
(envelopes with fresh ids and the current trace context), for the consumer tests."""

from __future__ import annotations

from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.common.v1 import address_pb2, ids_pb2, money_pb2
from marketplace.events.v1 import envelope_pb2, order_events_pb2, payment_events_pb2
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from workers.consumers import tables

PRODUCER = OutboxWriter(tables.outbox, producer="checkout")


def usd(amount: int) -> money_pb2.Money:
    """`amount` cents."""
    return money_pb2.Money(amount_minor=amount, currency="USD")


def order_placed(order_id: str) -> envelope_pb2.EventEnvelope:
    """OrderPlaced of a two-mug order of customer-1, shipping to Springfield."""
    line = checkout_pb.OrderLine(
        sku=ids_pb2.Sku(value="MUG-1"),
        merchant_id=ids_pb2.MerchantId(value="acme"),
        name="Mug",
        quantity=2,
        unit_price=usd(1250),
        line_total=usd(2500),
    )
    placed = order_events_pb2.OrderPlaced(
        order_id=ids_pb2.OrderId(value=order_id),
        customer_id=ids_pb2.CustomerId(value="customer-1"),
        lines=[line],
        subtotal=usd(2500),
        tax=usd(200),
        total=usd(2700),
        shipping_address=address_pb2.Address(
            name="Ada", line1="1 Main St", city="Springfield", postal_code="12345", country="US"
        ),
        payment_id=ids_pb2.PaymentId(value=str(new_id())),
        reservation_id=ids_pb2.ReservationId(value=str(new_id())),
    )
    return PRODUCER.envelope(placed, aggregate_type="order", aggregate_id=order_id)


def order_cancelled(order_id: str) -> envelope_pb2.EventEnvelope:
    """OrderCancelled of a pending order of customer-2 whose payment was declined."""
    cancelled = order_events_pb2.OrderCancelled(
        order_id=ids_pb2.OrderId(value=order_id),
        customer_id=ids_pb2.CustomerId(value="customer-2"),
        failure_reason=checkout_pb.FAILURE_REASON_PAYMENT_DECLINED,
        previous_status=checkout_pb.ORDER_STATUS_PENDING,
        total=usd(900),
    )
    return PRODUCER.envelope(cancelled, aggregate_type="order", aggregate_id=order_id)


def payment_refunded(order_id: str) -> envelope_pb2.EventEnvelope:
    """PaymentRefunded of 5.00 of the order."""
    refunded = payment_events_pb2.PaymentRefunded(
        payment_id=ids_pb2.PaymentId(value=str(new_id())),
        order_id=ids_pb2.OrderId(value=order_id),
        customer_id=ids_pb2.CustomerId(value="customer-1"),
        amount=usd(500),
        total_refunded=usd(500),
        operation_id=str(new_id()),
    )
    return PRODUCER.envelope(refunded, aggregate_type="payment", aggregate_id=order_id)

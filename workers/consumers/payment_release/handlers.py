"""`OrderCancelled` -> `ReleaseOrderPayment`: void the hold or refund the capture, once.

Whatever cancelled the order (the saga's compensation, the timeout sweep, the customer after
confirmation), this makes sure the payment holds nothing afterwards, so no single saga run is
the only path that gives the money back. The payment service remembers the cancellation, so
an authorization still in flight is voided by its reconciliation when it lands. UNAVAILABLE
(the payment's outcome is still being resolved, or the service is down) is retried by the
consumer loop with a growing backoff; a release the PSP refused goes to the DLQ for an operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from marketplace.events.v1 import order_events_pb2
from marketplace.payment.v1 import payment_service_pb2 as pb
from marketplace_platform.db import UnitOfWork
from workers.consumers.consumer import DeliveredEvent, Handler

if TYPE_CHECKING:
    from marketplace.payment.v1.payment_service_pb2_grpc import (
        PaymentServiceAsyncStub as PaymentStub,
    )

CONSUMER = "payment-release"


class ReleaseRefused(Exception):
    """The PSP refused to give the money back; an operator must look (the message DLQs)."""


def handlers(payment: PaymentStub) -> Mapping[str, Handler]:
    """The payment-release consumer's handler per event type."""

    async def on_order_cancelled(event: DeliveredEvent, uow: UnitOfWork) -> None:
        assert isinstance(event.payload, order_events_pb2.OrderCancelled)
        await release_payment(event.payload, payment)

    return {order_events_pb2.OrderCancelled.DESCRIPTOR.full_name: on_order_cancelled}


async def release_payment(cancelled: order_events_pb2.OrderCancelled, payment: PaymentStub) -> None:
    """Give back what the cancelled order's payment holds (idempotent by order)."""
    released = await payment.ReleaseOrderPayment(
        pb.ReleaseOrderPaymentRequest(
            idempotency_key=f"{cancelled.order_id.value}:cancelled", order_id=cancelled.order_id
        )
    )
    if not released.settled:
        status = pb.PaymentStatus.Name(released.payment.status)
        order_id = cancelled.order_id.value
        raise ReleaseRefused(f"the payment of cancelled order {order_id} still holds ({status})")

"""Task ConfirmOrder (after the pivot, before the commit): the order moves to CONFIRMED.

A cancel the customer asked for while the saga ran comes back as FAILED_PRECONDITION with
reason CANCEL_REQUESTED, which `translate` turns into OrderCancelRequested; the stock is still
only held then, so the compensation can release it.
"""

from __future__ import annotations

from typing import Any

import grpc

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from marketplace.common.v1 import ids_pb2
from saga_tasks import clients, wire
from saga_tasks.errors import translate

STEP = "confirm"
RAISES = frozenset({"RetryableError", "StepFailed", "OrderCancelRequested"})
REQUIRES = frozenset({"order_id", "reservation_id", "payment_id"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id", "reservation_id", "payment_id"} -> {"order_id", "status": "CONFIRMED"}."""
    key = wire.step_key(event, STEP)
    request = pb.ConfirmOrderRequest(
        idempotency_key=key,
        order_id=wire.order_id(event),
        reservation_id=ids_pb2.ReservationId(value=str(wire.field(event, "reservation_id"))),
        payment_id=ids_pb2.PaymentId(value=str(wire.field(event, "payment_id"))),
    )
    try:
        response = await clients.invoke(
            clients.checkout().ConfirmOrder, request, key=key, context=context
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    order = response.order
    return {
        "order_id": order.order_id.value,
        "status": pb.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_"),
    }


handler = clients.blocking(run)

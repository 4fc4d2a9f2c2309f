"""Task CommitReservation, after AuthorizePayment and before ConfirmOrder: the held stock
becomes sold, so a confirmed order never rests on a hold that can expire.

A reservation no longer ACTIVE (expired or released) is ReservationExpired, which the
definition compensates (a timeout) rather than retrying.
"""

from __future__ import annotations

from typing import Any

import grpc

from marketplace.inventory.v1 import inventory_service_pb2 as pb
from marketplace_platform.grpc_errors import details, refusal_reason
from saga_tasks import clients, wire
from saga_tasks.errors import ReservationExpired, translate

STEP = "commit"
RAISES = frozenset({"RetryableError", "StepFailed", "ReservationExpired"})
REQUIRES = frozenset({"order_id"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id"} -> {"reservation_id", "status": "COMMITTED"}."""
    key = wire.step_key(event, STEP)
    request = pb.CommitReservationRequest(idempotency_key=key, order_id=wire.order_id(event))
    try:
        response = await clients.invoke(
            clients.inventory().CommitReservation, request, key=key, context=context
        )
    except grpc.RpcError as error:
        # On commit, a closed reservation is one that expired (or was released) first.
        if refusal_reason(error)[0] == "RESERVATION_CLOSED":
            raise ReservationExpired(details(error)) from error
        raise translate(error, STEP) from error
    return {"reservation_id": response.reservation.reservation_id.value, "status": "COMMITTED"}


handler = clients.blocking(run)

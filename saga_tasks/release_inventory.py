"""Compensation ReleaseInventory: the inventory service gives the order's held stock back.

Releasing a released or expired reservation, or an order that never got one, succeeds. The
saga compensates only before CommitReservation, so a refusal (a committed reservation) is a
defect: StepFailed, retried and then parked like any other compensation failure.
"""

from __future__ import annotations

from typing import Any

import grpc

from marketplace.inventory.v1 import inventory_service_pb2 as pb
from saga_tasks import clients, reasons, wire
from saga_tasks.errors import translate

STEP = "release"
RAISES = frozenset({"RetryableError", "StepFailed"})
REQUIRES = frozenset({"order_id", "reason"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id", "reason"} -> {"status": "RELEASED" | "EXPIRED" | "NONE"}."""
    key = wire.step_key(event, STEP)
    request = pb.ReleaseReservationRequest(
        idempotency_key=key,
        order_id=wire.order_id(event),
        reason=reasons.release_reason(str(wire.field(event, "reason"))),
    )
    try:
        response = await clients.invoke(
            clients.inventory().ReleaseReservation, request, key=key, context=context
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    if not response.HasField("reservation"):
        return {"status": "NONE"}
    status = pb.ReservationStatus.Name(response.reservation.status)
    return {"status": status.removeprefix("RESERVATION_STATUS_")}


handler = clients.blocking(run)

"""Task ReserveInventory: the inventory service holds every line of the order, or none."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2

from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as pb
from saga_tasks import clients, wire
from saga_tasks.errors import translate

STEP = "reserve"
RAISES = frozenset({"RetryableError", "StepFailed", "OutOfStock"})
REQUIRES = frozenset({"order_id", "lines"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id", "lines": [{"sku", "quantity"}]} -> the reservation's id, status, expiry."""
    key = wire.step_key(event, STEP)
    request = pb.ReserveStockRequest(
        idempotency_key=key,
        order_id=wire.order_id(event),
        lines=[
            pb.ReservationLine(sku=ids_pb2.Sku(value=line["sku"]), quantity=line["quantity"])
            for line in wire.field(event, "lines")
        ],
        ttl=duration_pb2.Duration(seconds=clients.settings().reservation_ttl_seconds),
    )
    try:
        response = await clients.invoke(
            clients.inventory().ReserveStock, request, key=key, context=context
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    reservation = response.reservation
    return {
        "reservation_id": reservation.reservation_id.value,
        "status": pb.ReservationStatus.Name(reservation.status).removeprefix("RESERVATION_STATUS_"),
        "expires_at": reservation.expires_at.ToJsonString(),
    }


handler = clients.blocking(run)

"""Compensation end FailOrder: the checkout service moves the PENDING order to CANCELLED."""

from __future__ import annotations

import json
from typing import Any

import grpc

from marketplace.checkout.v1 import checkout_service_pb2 as pb
from saga_tasks import clients, reasons, wire
from saga_tasks.errors import translate

STEP = "fail"
RAISES = frozenset({"RetryableError", "StepFailed"})
REQUIRES = frozenset({"order_id", "reason", "error"})

MAX_DETAIL = 1024  # FailOrderRequest.failure_detail's limit


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id", "reason", "error": the caught error} -> {"status": "CANCELLED", "reason"}."""
    key = wire.step_key(event, STEP)
    reason = str(wire.field(event, "reason"))
    request = pb.FailOrderRequest(
        idempotency_key=key,
        order_id=wire.order_id(event),
        failure_reason=reasons.failure_reason(reason),
        failure_detail=failure_detail(wire.field(event, "error")),
    )
    try:
        response = await clients.invoke(
            clients.checkout().FailOrder, request, key=key, context=context
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    status = pb.OrderStatus.Name(response.order.status).removeprefix("ORDER_STATUS_")
    return {"status": status, "reason": reason}


def failure_detail(error: Any) -> str:
    """The caught error for operators: its name and, from a Lambda's JSON cause, the message."""
    if not isinstance(error, dict):
        return str(error)[:MAX_DETAIL]
    name = str(error.get("Error", ""))
    cause = error.get("Cause", "")
    try:
        parsed = json.loads(cause) if isinstance(cause, str) and cause else cause
    except json.JSONDecodeError:
        parsed = cause
    message = parsed.get("errorMessage", cause) if isinstance(parsed, dict) else cause
    return f"{name}: {message}"[:MAX_DETAIL] if message else name[:MAX_DETAIL]


handler = clients.blocking(run)

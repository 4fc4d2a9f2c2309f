"""Compensation VoidPayment: the payment service releases any hold on the customer's funds.

By the contract a void of a FAILED or VOIDED payment, or of an order with no payment (the
response carries none), succeeds without effect. A payment still PENDING (the PSP's answer to
the authorization is unknown) is refused with PAYMENT_STATE: that is retried until the outcome
is known, never read as nothing held.
"""

from __future__ import annotations

from typing import Any

import grpc

from marketplace.payment.v1 import payment_service_pb2 as pb
from marketplace_platform.grpc_errors import refusal_reason
from saga_tasks import clients, reasons, wire
from saga_tasks.errors import RetryableError, translate

STEP = "void"
RAISES = frozenset({"RetryableError", "StepFailed"})
REQUIRES = frozenset({"order_id", "reason"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id", "reason"} -> {"status": "VOIDED" | "FAILED" | "NONE"}."""
    key = wire.step_key(event, STEP)
    request = pb.VoidPaymentRequest(
        idempotency_key=key,
        order_id=wire.order_id(event),
        reason=reasons.void_reason(str(wire.field(event, "reason"))),
    )
    try:
        response = await clients.invoke(
            clients.payment().VoidPayment,
            request,
            key=key,
            context=context,
            limit=clients.settings().payment_call_timeout_seconds,
        )
    except grpc.RpcError as error:
        reason, metadata = refusal_reason(error)
        if reason == "PAYMENT_STATE" and metadata.get("status") == "PENDING":
            raise RetryableError("the authorization's outcome is not known yet") from error
        raise translate(error, STEP) from error
    if not response.HasField("payment"):
        return {"status": "NONE"}
    status = pb.PaymentStatus.Name(response.payment.status)
    return {"status": status.removeprefix("PAYMENT_STATUS_")}


handler = clients.blocking(run)

"""Task AuthorizePayment, the pivot: the payment service holds the order total on the card.

A decline is not an RPC error: the payment comes back FAILED with the PSP's failure code.
PENDING means the PSP's outcome is still unknown; the next attempt (same order, same key)
resolves it before anything is sent again. A retryable failure stays retryable while the
authorization budget lasts (from the execution's start, `saga_started_at`); once it is spent the
step raises AuthorizationBudgetSpent, so a PSP that fails briefly costs no sale and one that
stays down ends the order as a timeout.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc

from marketplace.common.v1 import ids_pb2
from marketplace.payment.v1 import payment_service_pb2 as pb
from saga_tasks import clients, wire
from saga_tasks.errors import (
    AuthorizationBudgetSpent,
    PaymentDeclined,
    RetryableError,
    StepFailed,
    translate,
)

STEP = "authorize"
RAISES = frozenset({"RetryableError", "StepFailed", "PaymentDeclined", "AuthorizationBudgetSpent"})
REQUIRES = frozenset({"order_id", "customer_id", "payment_method", "amount"})


async def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"order_id", "customer_id", "payment_method", "amount": money, "saga_started_at"?} ->
    the authorization."""
    try:
        return await _authorize(event, context)
    except RetryableError as error:
        if budget_spent(event.get("saga_started_at"), datetime.now(UTC)):
            raise AuthorizationBudgetSpent(f"{error} (authorization budget spent)") from error
        raise


def budget_spent(started_at: object, now: datetime) -> bool:
    """Whether the authorization budget, counted from the saga's start, is used up."""
    if not isinstance(started_at, str) or not started_at:
        return False  # an execution that does not say when it started keeps its Retry bound
    started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    return (now - started).total_seconds() >= clients.settings().authorization_budget_seconds


async def _authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    key = wire.step_key(event, STEP)
    request = pb.AuthorizePaymentRequest(
        idempotency_key=key,
        order_id=wire.order_id(event),
        customer_id=ids_pb2.CustomerId(value=str(wire.field(event, "customer_id"))),
        amount=wire.money_from_json(wire.field(event, "amount")),
        payment_method=str(wire.field(event, "payment_method")),
    )
    try:
        response = await clients.invoke(
            clients.payment().AuthorizePayment,
            request,
            key=key,
            context=context,
            limit=clients.settings().payment_call_timeout_seconds,
        )
    except grpc.RpcError as error:
        raise translate(error, STEP) from error
    payment = response.payment
    if payment.status == pb.PAYMENT_STATUS_FAILED:
        raise PaymentDeclined(payment.failure_code or "declined")
    if payment.status == pb.PAYMENT_STATUS_PENDING:
        raise RetryableError("the PSP's answer to the authorization is not known yet")
    if payment.status != pb.PAYMENT_STATUS_AUTHORIZED:
        raise StepFailed(f"payment is {pb.PaymentStatus.Name(payment.status)}, not AUTHORIZED")
    return {
        "payment_id": payment.payment_id.value,
        "status": "AUTHORIZED",
        "authorized": wire.money_to_json(payment.authorized),
    }


handler = clients.blocking(run)

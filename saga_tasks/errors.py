"""The named errors of the checkout saga and the translation of gRPC failures into them.

A raised exception's class name is the Step Functions error name the definition's Retry and
Catch match on, so these names are part of the contract with deploy/ecs/checkout_saga.asl.json.
"""

from __future__ import annotations

import grpc

from marketplace_platform.grpc_errors import (
    TRANSIENT_CODES,
    details,
    refusal_reason,
    status_code,
)


class SagaStepError(Exception):
    """Base of the errors a saga step ends with on purpose."""


class RetryableError(SagaStepError):
    """The step may succeed if tried again: unavailable, timed out, contended, outcome unknown."""


class StepFailed(SagaStepError):
    """The service refused the step for good (a bug or bad data, not a business outcome)."""


class PaymentDeclined(SagaStepError):
    """The payment provider declined the authorization."""


class AuthorizationBudgetSpent(SagaStepError):
    """The PSP kept failing for longer than the authorization budget; the saga compensates."""


class OutOfStock(SagaStepError):
    """Some line of the order cannot be reserved; nothing was held."""


class FraudRejected(SagaStepError):
    """The fraud check rejected the order."""


class ReservationExpired(SagaStepError):
    """The reservation was no longer ACTIVE when the saga came to commit it."""


class OrderCancelRequested(SagaStepError):
    """The customer asked to cancel the order before it was confirmed."""


# Services' own refusal reasons (ErrorInfo.reason) that are saga outcomes wherever they occur.
_ERROR_BY_REASON: dict[str, type[SagaStepError]] = {
    "OUT_OF_STOCK": OutOfStock,
    "CANCEL_REQUESTED": OrderCancelRequested,
}


def translate(error: grpc.RpcError, step: str) -> SagaStepError:
    """The named error for a failed call; steps map their own special reasons before this."""
    code = status_code(error)
    reason, _ = refusal_reason(error)
    message = f"{step}: {code.name} {reason or '-'}: {details(error)}"
    named = _ERROR_BY_REASON.get(reason)
    if named is not None:
        return named(message)
    # The saga also retries ABORTED (contended, or a request in flight under the key), and any
    # RESOURCE_EXHAUSTED that is not OUT_OF_STOCK (mapped above).
    if code in TRANSIENT_CODES or code is grpc.StatusCode.ABORTED:
        return RetryableError(message)
    return StepFailed(message)

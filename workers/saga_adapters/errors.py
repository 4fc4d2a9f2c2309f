"""The named errors of the checkout saga and the translation of gRPC failures into them.

A raised exception's class name is the Step Functions error name the definition's Retry and
Catch match on, so these names are part of the contract with deploy/ecs/checkout_saga.asl.json.
"""

from __future__ import annotations

from typing import cast

import grpc

from marketplace_platform.grpc_errors import from_rpc_error


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


# The brief's retryable statuses. RESOURCE_EXHAUSTED is retryable unless it means out of stock.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# Services' own refusal reasons (ErrorInfo.reason) that are saga outcomes wherever they occur.
_ERROR_BY_REASON: dict[str, type[SagaStepError]] = {
    "OUT_OF_STOCK": OutOfStock,
    "CANCEL_REQUESTED": OrderCancelRequested,
}


def refusal_reason(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata a service attached to its refusal ('' when none)."""
    domain_error = from_rpc_error(cast(grpc.aio.AioRpcError, error))  # same accessors
    if domain_error is None:
        return "", {}
    return domain_error.reason, domain_error.metadata


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call."""
    return cast(grpc.Call, error).code()


def details(error: grpc.RpcError) -> str:
    """The service's message for a failed call."""
    return cast(grpc.Call, error).details() or ""


def translate(error: grpc.RpcError, step: str) -> SagaStepError:
    """The named error for a failed call; steps map their own special reasons before this."""
    code = status_code(error)
    reason, _ = refusal_reason(error)
    message = f"{step}: {code.name} {reason or '-'}: {details(error)}"
    named = _ERROR_BY_REASON.get(reason)
    if named is not None:
        return named(message)
    if code in RETRYABLE_CODES:
        return RetryableError(message)
    return StepFailed(message)

"""The saga's failure reasons (`$.failure.reason`) in each service's own vocabulary."""

from __future__ import annotations

from marketplace.checkout.v1 import checkout_service_pb2 as checkout
from marketplace.inventory.v1 import inventory_service_pb2 as inventory
from marketplace.payment.v1 import payment_service_pb2 as payment
from saga_tasks.errors import StepFailed

FAILURE_REASONS = frozenset(
    {"payment_declined", "out_of_stock", "fraud_rejected", "timeout", "customer_cancelled"}
)

_RELEASE = {
    "payment_declined": inventory.RELEASE_REASON_PAYMENT_DECLINED,
    "out_of_stock": inventory.RELEASE_REASON_ORDER_FAILED,
    "fraud_rejected": inventory.RELEASE_REASON_FRAUD_REJECTED,
    "timeout": inventory.RELEASE_REASON_TIMEOUT,
    "customer_cancelled": inventory.RELEASE_REASON_CUSTOMER_CANCELLED,
}


def checked(reason: str) -> str:
    """The reason, or StepFailed when the definition passed one the saga does not know."""
    if reason not in FAILURE_REASONS:
        raise StepFailed(f"unknown failure reason {reason!r}")
    return reason


def release_reason(reason: str) -> inventory.ReleaseReason.ValueType:
    """Why inventory gives the stock back."""
    return _RELEASE[checked(reason)]


def void_reason(reason: str) -> payment.VoidReason.ValueType:
    """Why payment releases the hold."""
    if checked(reason) == "customer_cancelled":
        return payment.VOID_REASON_CUSTOMER_CANCELLED
    return payment.VOID_REASON_ORDER_FAILED


def failure_reason(reason: str) -> checkout.FailureReason.ValueType:
    """Why checkout cancels the order (the enum is the reason in upper case)."""
    return checkout.FailureReason.Value(f"FAILURE_REASON_{checked(reason).upper()}")

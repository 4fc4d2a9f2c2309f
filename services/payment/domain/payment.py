"""A payment for one order and the ledger of operations at the PSP. Pure: no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from marketplace_platform.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)


class PaymentStatus(StrEnum):
    """Where the money is."""

    PENDING = "PENDING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"
    FAILED = "FAILED"


class OperationKind(StrEnum):
    """What an operation asks the PSP to do."""

    AUTHORIZE = "AUTHORIZE"
    CAPTURE = "CAPTURE"
    VOID = "VOID"
    REFUND = "REFUND"


class OperationState(StrEnum):
    """What we know of an operation's outcome at the PSP."""

    PENDING = "PENDING"  # recorded, PSP not (yet) answered
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"  # the PSP was called but its answer was lost: resolve before retrying


OPEN_STATES = (OperationState.PENDING, OperationState.UNKNOWN)

# The operations a payment has at most one of at the PSP: one authorization (whatever key the
# caller used), one capture (capture needs AUTHORIZED and leaves CAPTURED), one void (void needs
# AUTHORIZED and leaves VOIDED). A repeat of one that failed, under another request key, is the
# same request at the PSP, and gets its first answer.
ONE_PER_ORDER = frozenset({OperationKind.AUTHORIZE, OperationKind.CAPTURE, OperationKind.VOID})

# Reconciliation's verdict on an operation the PSP shows no trace of, once its owner has had
# time enough to retry it: FAILED with this code.
NOT_APPLIED = "not_applied"
# Failure codes that are not a refusal: the PSP never applied the operation (or older ledgers
# read a rate limit as a decline). A repeat of the request tries such an operation again.
NEVER_APPLIED_FAILURES = frozenset({NOT_APPLIED, "rate_limit", "lock_timeout"})


@dataclass(frozen=True)
class Payment:
    """One order's payment: amounts in minor units of one currency."""

    payment_id: uuid.UUID
    order_id: uuid.UUID
    customer_id: str
    currency: str
    payment_method: str
    amount: int  # what the order asked to authorize
    status: PaymentStatus
    authorized: int = 0
    captured: int = 0
    refunded: int = 0
    psp_intent_id: str | None = None
    failure_code: str | None = None
    capture_before: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Operation:
    """One request to the PSP, keyed so that repeating it never repeats its effect."""

    operation_id: uuid.UUID
    payment_id: uuid.UUID
    kind: OperationKind
    amount: int
    state: OperationState
    request_key: str
    failure_code: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def psp_idempotency_key(self, order_id: uuid.UUID) -> str:
        """The operation's key at the PSP, never random: a retry reuses it. An order has one
        authorization, one capture and one void, so theirs name the order
        (`authorize-<order_id>`): asked again from another Region, whose ledger never received
        the first (the order id is derived from the client's request, the same everywhere), it
        is the same request at the PSP, which answers the first one's outcome instead of
        applying it twice. Refunds, several per order, are named by the operation
        (`refund-<operation_id>`)."""
        if self.kind in ONE_PER_ORDER:
            return f"{self.kind.lower()}-{order_id}"
        return f"{self.kind.lower()}-{self.operation_id}"


@dataclass(frozen=True)
class Ledger:
    """A payment and its operations, oldest first: what an answer about a payment shows."""

    payment: Payment
    operations: tuple[Operation, ...]


def may_try_again(operation: Operation) -> bool:
    """True when the operation failed without the PSP refusing it: a repeat tries it again."""
    return (
        operation.state is OperationState.FAILED
        and operation.failure_code in NEVER_APPLIED_FAILURES
    )


def awaits_outcome(operation: Operation) -> bool:
    """True when the PSP's answer may still be written: open, or failed only for want of one."""
    return operation.state in OPEN_STATES or may_try_again(operation)


class PaymentMismatch(FailedPrecondition):
    """The order's payment was authorized from a different request."""

    reason = "PAYMENT_MISMATCH"


class PaymentStateConflict(FailedPrecondition):
    """The payment's state does not allow the operation (e.g. void after capture)."""

    reason = "PAYMENT_STATE"


class AmountExceeded(FailedPrecondition):
    """Capture above the authorization, or refund above what was captured."""

    reason = "AMOUNT_EXCEEDED"


class OrderCancelled(FailedPrecondition):
    """The order's payment was released (the order was cancelled): no new hold or capture."""

    reason = "ORDER_CANCELLED"

    @classmethod
    def of_order(cls, order_id: uuid.UUID) -> OrderCancelled:
        """The refusal for the cancelled order `order_id`."""
        return cls(
            f"order {order_id} was cancelled and its payment released",
            metadata={"order_id": str(order_id)},
        )


class OperationInProgress(DependencyUnavailable):
    """Another operation on the payment has no known outcome yet; ask again later."""

    reason = "OPERATION_IN_PROGRESS"


class ReleaseBlocked(OperationInProgress):
    """A release found another operation on the payment open; it carries both, so the release
    can settle that operation from the PSP's word and try again."""

    def __init__(self, operation: Operation, payment: Payment) -> None:
        super().__init__(
            f"the {operation.kind.lower()} of order {payment.order_id} has no known outcome"
            " yet; release later",
            metadata={
                "order_id": str(payment.order_id),
                "operation_id": str(operation.operation_id),
                "status": payment.status,
            },
        )
        self.operation = operation
        self.payment = payment


# ISO 4217 currencies this platform settles in; anything else is refused before the PSP sees it.
SUPPORTED_CURRENCIES = frozenset(
    {"USD", "EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "SEK", "NOK", "DKK"}
)


def check_currency(currency: str, field: str = "amount.currency") -> None:
    """Refuse a currency we do not settle in."""
    if currency not in SUPPORTED_CURRENCIES:
        raise InvalidArgument(
            f"unsupported currency {currency}",
            (FieldViolation(field, f"unsupported currency {currency}", "currency.supported"),),
        )


def check_same_authorization(payment: Payment, *, amount: int, currency: str, method: str) -> None:
    """A repeated authorization must ask for the same thing."""
    if (payment.amount, payment.currency, payment.payment_method) != (amount, currency, method):
        raise PaymentMismatch(
            f"order {payment.order_id} was authorized for {payment.amount} {payment.currency}"
            f" with {payment.payment_method}",
            metadata={"order_id": str(payment.order_id)},
        )


# A payment in these states holds no funds: voiding it again has nothing to release.
NOTHING_HELD = frozenset({PaymentStatus.FAILED, PaymentStatus.VOIDED})


def holds_nothing(payment: Payment) -> bool:
    """True when a void of the payment succeeds without effect (declined or already voided)."""
    return payment.status in NOTHING_HELD


def held(payment: Payment) -> int:
    """The customer's money the payment holds now: the authorization until it is captured or
    voided, then what was captured and not refunded."""
    if payment.status is PaymentStatus.AUTHORIZED:
        return payment.authorized
    if payment.status in (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED):
        return payment.captured - payment.refunded
    return 0


def release_operation(payment: Payment) -> tuple[OperationKind, int] | None:
    """What gives back all the payment holds: a void before capture, a refund after (or None)."""
    if payment.status is PaymentStatus.AUTHORIZED:
        return OperationKind.VOID, payment.authorized
    if held(payment) > 0:
        return OperationKind.REFUND, held(payment)
    return None


def check_operation(payment: Payment, kind: OperationKind, amount: int, currency: str) -> None:
    """Refuse an operation the payment's state or amounts do not allow."""
    if kind is not OperationKind.VOID and currency != payment.currency:
        raise InvalidArgument(f"currency {currency} differs from the payment's {payment.currency}")
    allowed = {
        OperationKind.CAPTURE: (PaymentStatus.AUTHORIZED,),
        OperationKind.VOID: (PaymentStatus.AUTHORIZED,),
        OperationKind.REFUND: (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED),
    }[kind]
    if payment.status not in allowed:
        raise PaymentStateConflict(
            f"cannot {kind.lower()} a payment that is {payment.status}",
            metadata={"order_id": str(payment.order_id), "status": payment.status},
        )
    limit = (
        payment.authorized if kind is OperationKind.CAPTURE else payment.captured - payment.refunded
    )
    if kind is not OperationKind.VOID and amount > limit:
        raise AmountExceeded(
            f"{kind.lower()} of {amount} exceeds the {limit} {payment.currency} available",
            metadata={"order_id": str(payment.order_id), "limit": str(limit)},
        )


def after_success(payment: Payment, operation: Operation) -> Payment:
    """The payment once the PSP confirmed the operation."""
    if operation.kind is OperationKind.AUTHORIZE:
        return replace(payment, status=PaymentStatus.AUTHORIZED, authorized=operation.amount)
    if operation.kind is OperationKind.CAPTURE:
        return replace(payment, status=PaymentStatus.CAPTURED, captured=operation.amount)
    if operation.kind is OperationKind.VOID:
        return replace(payment, status=PaymentStatus.VOIDED)
    refunded = payment.refunded + operation.amount
    status = (
        PaymentStatus.REFUNDED if refunded >= payment.captured else PaymentStatus.PARTIALLY_REFUNDED
    )
    return replace(payment, status=status, refunded=refunded)


def reopened(payment: Payment, operation: Operation) -> Payment:
    """The payment once a failed-but-never-applied operation of it is tried again."""
    if operation.kind is OperationKind.AUTHORIZE and payment.status is PaymentStatus.FAILED:
        return replace(payment, status=PaymentStatus.PENDING, failure_code=None)
    return payment


def after_failure(payment: Payment, operation: Operation, code: str) -> Payment:
    """The payment once the PSP refused the operation (a decline fails the whole payment)."""
    if operation.kind is OperationKind.AUTHORIZE:
        return replace(payment, status=PaymentStatus.FAILED, failure_code=code)
    return payment

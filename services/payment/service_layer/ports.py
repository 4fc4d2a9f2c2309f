"""What the payment use cases need from outside the service, as abstract ports: the payment
repository, the payment provider (PSP) with the values it answers and how they are read, and
the unit of work that binds the repository to one transaction.

The adapters implement them (`adapters.payment_repository.SqlPaymentRepository`,
`adapters.psp.HttpPsp`, `adapters.unit_of_work.PaymentUnitOfWork`); the service layer's unit
tests implement them in memory.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from marketplace_platform.db import AbstractUnitOfWork
from marketplace_platform.errors import DependencyUnavailable
from services.payment.domain.payment import (
    Ledger,
    Operation,
    OperationKind,
    OperationState,
    Payment,
)

log = logging.getLogger(__name__)

# --- the payment repository ---------------------------------------------------------------------


class PaymentRepository(Protocol):
    """Payments, their operations and the cancelled orders, within one unit of work: the port
    (SqlPaymentRepository in the service, an in-memory one in unit tests)."""

    async def create(
        self, payment: Payment, operation: Operation
    ) -> tuple[Payment, Operation] | None:
        """Insert the order's payment with its first operation, in one statement; None (and
        nothing inserted) when the order already has a payment or was cancelled."""
        ...

    async def mark_cancelled(self, order_id: uuid.UUID) -> None:
        """Remember that the order was cancelled (once; a repeat changes nothing)."""
        ...

    async def is_cancelled(self, order_id: uuid.UUID) -> bool:
        """Whether the order's payment was released because the order was cancelled."""
        ...

    async def cancelled_holding_money(self) -> list[Payment]:
        """Payments of cancelled orders that still hold money and have no open operation,
        oldest cancellation first."""
        ...

    async def by_order(self, order_id: uuid.UUID, *, for_update: bool = False) -> Payment | None:
        """The order's payment (row-locked when for_update)."""
        ...

    async def locked_operation(self, operation_id: uuid.UUID) -> tuple[Payment, Operation]:
        """An operation and its payment, both row-locked (the payment's lock first), each as
        the last committed change left it."""
        ...

    async def all_by_intent(self) -> dict[str, Payment]:
        """Every payment that has a PSP intent, by intent id."""
        ...

    async def save(self, payment: Payment) -> Payment:
        """Write the payment's status and amounts; the payment as stored."""
        ...

    async def record_outcome(
        self,
        payment: Payment,
        operation: Operation,
        state: OperationState,
        failure_code: str | None = None,
    ) -> Ledger:
        """Write what became of an operation and the payment's status and amounts, in one
        statement, under the payment's lock (`locked_operation`); the payment as stored, with
        its operations as they now stand."""
        ...

    async def add_operation(self, operation: Operation) -> Operation | None:
        """Record an operation; None when the same request already has one."""
        ...

    async def operation(
        self, payment_id: uuid.UUID, kind: OperationKind, request_key: str
    ) -> Operation | None:
        """The operation recorded for one request."""
        ...

    async def operation_by_id(self, operation_id: uuid.UUID) -> Operation:
        """One operation, locked for the transaction."""
        ...

    async def operations(self, payment_id: uuid.UUID) -> list[Operation]:
        """A payment's operations, oldest first."""
        ...

    async def set_state(
        self, operation: Operation, state: OperationState, failure_code: str | None = None
    ) -> None:
        """Record what became of an operation."""
        ...

    async def reopen(self, operation: Operation) -> Operation:
        """Open again, as UNKNOWN, an operation that failed without a refusal; the operation
        as it now stands, whoever changed it."""
        ...

    async def open_operations(self, older_than: datetime) -> list[tuple[Operation, Payment]]:
        """Operations still pending or unknown since before `older_than`, with their payment."""
        ...


# --- the payment provider -----------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """The PSP's view of one authorization."""

    id: str
    status: str
    amount: int
    currency: str
    amount_capturable: int
    amount_received: int
    amount_refunded: int
    metadata: dict[str, str] = field(default_factory=dict)
    capture_before: datetime | None = None
    created: datetime | None = None
    decline_code: str | None = None  # why the last authorization attempt failed, if it did


@dataclass(frozen=True)
class Approved:
    """The PSP applied the operation; `intent` as the PSP has it now (for a replayed answer,
    read again: it may have moved since the first)."""

    intent: Intent | None
    reference: str


@dataclass(frozen=True)
class Declined:
    """The PSP refused the operation (card declined, amount or state refused)."""

    code: str
    intent_id: str | None = None


@dataclass(frozen=True)
class Unknown:
    """The PSP was called but we do not know whether it applied the operation."""

    cause: str


@dataclass(frozen=True)
class TryAgain:
    """The PSP did not apply this request and asks for it again (busy key, rate limit), after
    `after_seconds` when it said so."""

    cause: str
    after_seconds: float | None = None


PspOutcome = Approved | Declined | Unknown | TryAgain


class PspUnavailable(DependencyUnavailable):
    """The PSP is failing; calls are refused quickly until it recovers."""

    reason = "PSP_UNAVAILABLE"


# Intent statuses after an authorization attempt, and what each means for it. Stripe's full list;
# the simulator shows requires_payment_method, requires_capture, succeeded and canceled.
AUTHORIZED_STATUSES = frozenset({"requires_capture", "succeeded"})  # held (succeeded: captured)
UNDECIDED_STATUSES = frozenset({"processing"})  # the PSP has not decided yet: ask again later
DECLINED_STATUSES = {
    "requires_payment_method": "card_declined",  # declined; last_payment_error says why
    "canceled": "canceled",  # voided at the PSP (e.g. by reconciliation): nothing held
    # Needs the customer (3-D Secure) or was never confirmed: nothing is held, and without the
    # customer it never will be.
    "requires_action": "authentication_required",
    "requires_confirmation": "not_confirmed",
}


def authorization_outcome(intent: Intent) -> Approved | Declined | Unknown:
    """What the intent created for one of our authorizations says became of it: authorized,
    declined (nothing held, final), or not decided yet (also for a status we do not know:
    never guessed)."""
    if intent.status in AUTHORIZED_STATUSES:
        return Approved(intent=intent, reference=intent.id)
    if intent.status in DECLINED_STATUSES:
        code = intent.decline_code or DECLINED_STATUSES[intent.status]
        return Declined(code=code, intent_id=intent.id)
    if intent.status not in UNDECIDED_STATUSES:
        log.warning("intent %s has a status we do not know: %s", intent.id, intent.status)
    return Unknown(f"intent {intent.id} is {intent.status}")


class PaymentProvider(Protocol):
    """The PSP port the use cases drive: `HttpPsp` in the service, an in-memory PSP in unit
    tests. Mutating calls answer a PspOutcome; reads raise PspUnavailable when the PSP cannot
    answer."""

    async def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> PspOutcome:
        """Authorize: a payment intent with manual capture."""
        ...

    async def capture(self, intent_id: str, *, amount: int, idempotency_key: str) -> PspOutcome:
        """Capture up to the authorized amount."""
        ...

    async def cancel(self, intent_id: str, *, idempotency_key: str) -> PspOutcome:
        """Void an uncaptured authorization."""
        ...

    async def refund(self, intent_id: str, *, amount: int, idempotency_key: str) -> PspOutcome:
        """Refund part or all of what was captured."""
        ...

    async def retrieve(self, intent_id: str) -> Intent | None:
        """The intent as the PSP has it now (None if it does not exist)."""
        ...

    async def find(self, **metadata: str) -> list[Intent]:
        """Intents whose metadata has these values (e.g. order_id=...), oldest first."""
        ...

    def every_intent(self) -> AsyncIterator[Intent]:
        """All intents."""
        ...


# --- the unit of work ---------------------------------------------------------------------------


class AbstractPaymentUnitOfWork(AbstractUnitOfWork, Protocol):
    """One transaction of the payment schema: entering begins it, a clean exit commits it, an
    error rolls it back; `payments` and `publish` are usable while it is open."""

    @property
    def payments(self) -> PaymentRepository:
        """Payments, their operations and the cancelled orders, within this transaction."""
        ...

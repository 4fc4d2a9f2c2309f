"""Releasing a cancelled order's payment: void a held authorization, refund what was captured
and not refunded, and remember the cancellation, all keyed by the order so repeats (the caller's
and reconciliation's) are one operation at the PSP.

The mark and the operation that gives the money back are written in one transaction. The
cancellation ends the ownership of every other operation on the payment (a cancelled order is
never authorized or captured again), so one whose answer was lost (UNKNOWN) is settled here by
asking the PSP, never by sending it again: applied, it is released with the rest; not applied,
it failed, and a late success at the PSP is an orphan reconciliation voids. One being sent
right now (PENDING) makes the caller get UNAVAILABLE and ask again shortly; an authorization
that lands after the mark is released by reconciliation's sweep of cancelled orders.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from marketplace_platform.ids import new_id
from services.payment.domain import payment as rules
from services.payment.domain.payment import (
    OPEN_STATES,
    Operation,
    OperationState,
    Payment,
    ReleaseBlocked,
)
from services.payment.service_layer import payments
from services.payment.service_layer.deps import PaymentDeps
from services.payment.service_layer.ports import Declined, PaymentRepository, Unknown

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Release:
    """Give back whatever the cancelled order's payment holds."""

    order_id: uuid.UUID


@dataclass(frozen=True)
class Released:
    """The payment after the release (None: the order never had one) and whether it holds
    nothing any more."""

    payment: Payment | None
    settled: bool


def request_key(order_id: uuid.UUID) -> str:
    """The ledger key of the release's void or refund: one per order, whoever asks."""
    return f"release:{order_id}"


async def release(command: Release, deps: PaymentDeps) -> Released:
    """Mark the order cancelled and give its payment's money back (idempotent by order)."""
    try:
        operation, payment = await _start(command.order_id, deps)
    except ReleaseBlocked as blocked:
        if not await _settle_abandoned(blocked.operation, blocked.payment, deps):
            raise
        operation, payment = await _start(command.order_id, deps)
    if operation is not None and payment is not None and operation.state in OPEN_STATES:
        payment = await payments.drive(operation, payment, deps)
    settled = payment is None or rules.held(payment) == 0
    if not settled:
        log.warning("release of order %s left money held: %s", command.order_id, payment)
    return Released(payment, settled)


async def _start(order_id: uuid.UUID, deps: PaymentDeps) -> tuple[Operation | None, Payment | None]:
    """In one transaction: the mark, and the operation to drive (None: nothing is held)."""
    async with deps.unit_of_work() as uow:
        await uow.payments.mark_cancelled(order_id)
        payment = await uow.payments.by_order(order_id, for_update=True)
        if payment is None:
            return None, None
        key = request_key(order_id)
        busy = next(
            (
                operation
                for operation in await uow.payments.operations(payment.payment_id)
                if operation.state in OPEN_STATES and operation.request_key != key
            ),
            None,
        )
        if busy is None:
            return await _operation(uow.payments, payment, key), payment
    assert busy is not None
    # Raised after the block, so the mark is committed: a late authorization is still released.
    raise ReleaseBlocked(busy, payment)


async def _settle_abandoned(operation: Operation, payment: Payment, deps: PaymentDeps) -> bool:
    """Settle an operation whose answer was lost and whose owner the cancellation ended, from
    the PSP's word alone; False when it is still being sent or the PSP cannot tell yet."""
    if operation.state is not OperationState.UNKNOWN:
        return False
    outcome = await payments.resolve(operation, payment, deps)
    if isinstance(outcome, Unknown):
        return False
    await payments.settle(operation, outcome or Declined(code=rules.NOT_APPLIED), deps)
    log.info(
        "settled the abandoned %s of cancelled order %s", operation.kind.lower(), payment.order_id
    )
    return True


async def _operation(repository: PaymentRepository, payment: Payment, key: str) -> Operation | None:
    """The release's void or refund: the one recorded under the order's key, or a new one."""
    planned = rules.release_operation(payment)
    if planned is None:
        return None  # nothing held: no ledger entry, no PSP call
    kind, amount = planned
    existing = await repository.operation(payment.payment_id, kind, key)
    if existing is not None and rules.may_try_again(existing):
        return await repository.reopen(existing)  # never applied: this release tries again
    if existing is not None:
        return existing
    operation = await repository.add_operation(
        Operation(new_id(), payment.payment_id, kind, amount, OperationState.PENDING, key)
    )
    assert operation is not None  # the payment row lock serializes releases of one order
    return operation

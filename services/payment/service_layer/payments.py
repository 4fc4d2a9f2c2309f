"""Payment use cases. Each PSP operation is recorded before it is sent, sent with a key derived
from it (from the order, for the order's one authorization, capture and void:
`Operation.psp_idempotency_key`), and settled in the ledger from the PSP's answer; a lost answer
makes it UNKNOWN and it is resolved by asking the PSP what happened before anything is sent
again.

Keyed by the order, an authorization asked again from another Region, whose ledger never
received the first (an asynchronous replica), is answered with the first one's intent, as the
PSP has it now: held, captured or voided since, each recorded as such, and never authorized a
second time."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, replace

from marketplace_platform.errors import NotFound
from marketplace_platform.ids import new_id
from marketplace_platform.request_context import remaining_budget
from services.payment.domain import payment as rules
from services.payment.domain.payment import (
    OPEN_STATES,
    Ledger,
    Operation,
    OperationKind,
    OperationState,
    OrderCancelled,
    Payment,
    PaymentStatus,
)
from services.payment.service_layer import events
from services.payment.service_layer.deps import PaymentDeps
from services.payment.service_layer.ports import (
    UNDECIDED_STATUSES,
    Approved,
    Declined,
    PaymentRepository,
    PspOutcome,
    PspUnavailable,
    TryAgain,
    Unknown,
    authorization_outcome,
)

log = logging.getLogger(__name__)

AUTHORIZE_REQUEST = "authorize"  # one authorization per order, whatever key the caller used
# A capture or void the PSP refuses may be refused because it is done already: captured, or
# voided, under another key, or from another Region whose ledger this one never received. The
# intent then says so, and the operation is settled as applied, never sent again.
ALREADY_APPLIED_REFUSALS = frozenset({OperationKind.CAPTURE, OperationKind.VOID})
# The longest Retry-After we wait out within one call; a longer one ends the call UNAVAILABLE.
MAX_RETRY_AFTER_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True)
class Authorize:
    """Authorize an order's amount on a payment method."""

    order_id: uuid.UUID
    customer_id: str
    amount: int
    currency: str
    payment_method: str


@dataclass(frozen=True, kw_only=True)
class Operate:
    """Capture, void or refund an order's payment; `request_key` makes repeats harmless."""

    order_id: uuid.UUID
    kind: OperationKind
    amount: int
    currency: str
    request_key: str


@dataclass(frozen=True, kw_only=True)
class Void:
    """Release the hold on an order's funds; `request_key` makes repeats harmless."""

    order_id: uuid.UUID
    request_key: str


async def authorize(command: Authorize, deps: PaymentDeps) -> Payment:
    """Authorize once per order: repeats return the first outcome, another amount is refused,
    and an order whose payment was released (cancelled) is refused."""
    return (await authorize_with_ledger(command, deps)).payment


async def authorize_with_ledger(command: Authorize, deps: PaymentDeps) -> Ledger:
    """`authorize`, with the payment's operations as they stand after it, read in the
    transaction that settled it (or, for a repeat, that found it settled)."""
    rules.check_currency(command.currency)
    async with deps.unit_of_work() as uow:
        fresh = Payment(
            payment_id=new_id(),
            order_id=command.order_id,
            customer_id=command.customer_id,
            currency=command.currency,
            payment_method=command.payment_method,
            amount=command.amount,
            status=PaymentStatus.PENDING,
        )
        # Both recorded in one statement and committed before the PSP is called: a crash
        # leaves a known pending operation, resolved by asking the PSP what became of it.
        created = await uow.payments.create(fresh, _authorization(fresh, command.amount))
        if created is None:  # the order has a payment already, or it was cancelled
            payment, operation = await _authorization_of(uow.payments, command)
            if operation.state not in OPEN_STATES:
                # Settled by an earlier call: read the payment again, as of after that settlement.
                settled = await uow.payments.by_order(command.order_id)
                assert settled is not None
                return Ledger(settled, tuple(await uow.payments.operations(settled.payment_id)))
        else:
            payment, operation = created
    return await _drive_ledger(operation, payment, deps)


def _authorization(payment: Payment, amount: int) -> Operation:
    """A new authorize operation of the payment, pending."""
    return Operation(
        new_id(),
        payment.payment_id,
        OperationKind.AUTHORIZE,
        amount,
        OperationState.PENDING,
        AUTHORIZE_REQUEST,
    )


async def _authorization_of(
    payments: PaymentRepository, command: Authorize
) -> tuple[Payment, Operation]:
    """The order's payment and its authorization, for a repeat of the request: refused when
    the order was cancelled or the repeat asks for something else; one that failed without a
    refusal is opened again."""
    payment = await payments.by_order(command.order_id)
    if payment is None or await payments.is_cancelled(command.order_id):
        raise OrderCancelled.of_order(command.order_id)
    rules.check_same_authorization(
        payment,
        amount=command.amount,
        currency=command.currency,
        method=command.payment_method,
    )
    # The payment and its authorization are created in one statement: the one is there.
    operation = await payments.operation(
        payment.payment_id, OperationKind.AUTHORIZE, AUTHORIZE_REQUEST
    )
    assert operation is not None
    if rules.may_try_again(operation):
        operation, payment = await _reopen(payments, operation, command.order_id)
    return payment, operation


async def _reopen(
    payments: PaymentRepository, operation: Operation, order_id: uuid.UUID
) -> tuple[Operation, Payment]:
    """Try again an operation that failed without a refusal: the operation and its payment."""
    # The payment row first, then the operation's, the order settle() takes them in.
    payment = await payments.by_order(order_id, for_update=True)
    assert payment is not None
    operation = await payments.reopen(operation)
    if operation.state in OPEN_STATES:
        log.info("%s of order %s is tried again", operation.kind.lower(), order_id)
        payment = await payments.save(rules.reopened(payment, operation))
    return operation, payment


async def operate(command: Operate, deps: PaymentDeps) -> Payment:
    """Capture, void or refund within the amount rules; a repeated request is answered again."""
    payment = await _operate(command, deps)
    if payment is None:
        raise NotFound(
            f"no payment for order {command.order_id}",
            metadata={"order_id": str(command.order_id)},
        )
    return payment


async def void(command: Void, deps: PaymentDeps) -> Payment | None:
    """Void as the contract says: no payment (None), or a FAILED or VOIDED one, succeeds without
    effect; a captured payment, or one whose authorization is still PENDING, is refused."""
    return await _operate(
        Operate(
            order_id=command.order_id,
            kind=OperationKind.VOID,
            amount=0,
            currency="",
            request_key=command.request_key,
        ),
        deps,
    )


async def _operate(command: Operate, deps: PaymentDeps) -> Payment | None:
    """The operation on the order's payment (None when the order has none), once per key."""
    async with deps.unit_of_work() as uow:
        payment = await uow.payments.by_order(command.order_id, for_update=True)
        if payment is None:
            return None
        operation = await uow.payments.operation(
            payment.payment_id, command.kind, command.request_key
        )
        if operation is None:
            if not await _admit(uow.payments, payment, command):
                return payment  # nothing to release: no ledger entry, no PSP call, no event
            # A void gives back the whole authorization, whatever amount the request carried.
            amount = payment.authorized if command.kind is OperationKind.VOID else command.amount
            operation = await uow.payments.add_operation(
                Operation(
                    new_id(),
                    payment.payment_id,
                    command.kind,
                    amount,
                    OperationState.PENDING,
                    command.request_key,
                )
            )
            assert operation is not None  # the payment row lock serializes same-key requests
        elif rules.may_try_again(operation):
            if not await _admit(uow.payments, payment, command):
                return payment
            operation, payment = await _reopen(uow.payments, operation, command.order_id)
    if operation.state not in OPEN_STATES:
        return payment
    return await drive(operation, payment, deps)


async def _admit(payments: PaymentRepository, payment: Payment, command: Operate) -> bool:
    """Whether the payment's state lets the request (again) reach the PSP: False for a void
    with nothing to release; the rules' refusal raised (e.g. capture after a void)."""
    if command.kind is OperationKind.VOID and rules.holds_nothing(payment):
        return False
    rules.check_operation(payment, command.kind, command.amount, command.currency)
    if command.kind is OperationKind.CAPTURE and await payments.is_cancelled(command.order_id):
        raise OrderCancelled.of_order(command.order_id)
    return True


async def get_payment(order_id: uuid.UUID, deps: PaymentDeps) -> tuple[Payment, list[Operation]]:
    """The order's payment and its operations."""
    async with deps.unit_of_work() as uow:
        payment = await uow.payments.by_order(order_id)
        if payment is None:
            raise NotFound(f"no payment for order {order_id}", metadata={"order_id": str(order_id)})
        return payment, await uow.payments.operations(payment.payment_id)


async def drive(operation: Operation, payment: Payment, deps: PaymentDeps) -> Payment:
    """Get an open operation to a known outcome: resolve, send (same key), settle.

    Bounded: after `attempts` tries without an outcome the operation stays open, the caller
    gets UNAVAILABLE, and a later call or the reconciliation resolves it. Concurrent callers in
    this process share one drive.
    """
    return (await _drive_ledger(operation, payment, deps)).payment


async def _drive_ledger(operation: Operation, payment: Payment, deps: PaymentDeps) -> Ledger:
    """`drive`, with the payment's operations as the settlement left them."""
    return await deps.in_flight.join(
        operation.operation_id, lambda: _drive(operation, payment, deps)
    )


async def _drive(operation: Operation, payment: Payment, deps: PaymentDeps) -> Ledger:
    state = operation.state
    asked_to_wait: float | None = None
    cause = "no attempt"
    for attempt in range(deps.attempts):
        if attempt and not await _pause(attempt, asked_to_wait, deps):
            break
        outcome: PspOutcome | None = (
            await resolve(operation, payment, deps) if state is OperationState.UNKNOWN else None
        )
        if outcome is None:  # not applied (or never sent): send it, under its own key
            outcome = await send(operation, payment, deps)
        if isinstance(outcome, Unknown):
            state, asked_to_wait, cause = OperationState.UNKNOWN, None, outcome.cause
            await mark_unknown(operation, deps)
            continue
        if isinstance(outcome, TryAgain):  # not applied: the same key is sent again
            asked_to_wait, cause = outcome.after_seconds, outcome.cause
            continue
        if isinstance(outcome, Declined) and operation.kind in ALREADY_APPLIED_REFUSALS:
            applied = await resolve(operation, payment, deps)
            if isinstance(applied, Approved):
                outcome = applied
        return await _settle(operation, outcome, deps)
    raise PspUnavailable(
        f"no outcome from the PSP for the {operation.kind.lower()} of order {payment.order_id}"
        f" ({cause}); it will be resolved before anything is sent again",
        metadata={"order_id": str(payment.order_id), "operation_id": str(operation.operation_id)},
    )


async def _pause(attempt: int, asked_to_wait: float | None, deps: PaymentDeps) -> bool:
    """Wait before another try: what the PSP asked for, else backoff with full jitter. False
    when that wait would outlast the caller's deadline (or our patience): give up now."""
    if asked_to_wait is None:
        delay = random.uniform(0, deps.backoff_seconds * 2 ** (attempt - 1))
    else:
        delay = asked_to_wait
    budget = remaining_budget()
    if delay > MAX_RETRY_AFTER_SECONDS or (budget is not None and delay >= budget):
        return False
    await asyncio.sleep(delay)
    return True


async def send(operation: Operation, payment: Payment, deps: PaymentDeps) -> PspOutcome:
    """Send the operation to the PSP under its own idempotency key."""
    key = operation.psp_idempotency_key(payment.order_id)
    if operation.kind is OperationKind.AUTHORIZE:
        # Only what the order determines: the same order authorized from another Region (with
        # its own payment and operation ids) sends the same parameters under the same key, so
        # the PSP answers the first authorization instead of refusing the key.
        metadata = {"order_id": str(payment.order_id), "customer_id": payment.customer_id}
        outcome = await deps.psp.create_intent(
            amount=operation.amount,
            currency=payment.currency,
            payment_method=payment.payment_method,
            metadata=metadata,
            idempotency_key=key,
        )
        # A replayed answer carries the intent as it is now, which may be past the hold
        # (captured, or voided, in another Region): read it as any authorization's intent.
        if isinstance(outcome, Approved) and outcome.intent is not None:
            return authorization_outcome(outcome.intent)
        return outcome
    intent_id = payment.psp_intent_id
    assert intent_id is not None  # only authorized payments take further operations
    if operation.kind is OperationKind.CAPTURE:
        return await deps.psp.capture(intent_id, amount=operation.amount, idempotency_key=key)
    if operation.kind is OperationKind.VOID:
        return await deps.psp.cancel(intent_id, idempotency_key=key)
    return await deps.psp.refund(intent_id, amount=operation.amount, idempotency_key=key)


async def resolve(
    operation: Operation, payment: Payment, deps: PaymentDeps
) -> Approved | Declined | Unknown | None:
    """Ask the PSP what became of an operation whose answer was lost: its outcome, Unknown while
    the PSP has not decided, or None when it was not applied (so it may be sent again)."""
    if operation.kind is OperationKind.AUTHORIZE:
        # The order's one authorization, wherever it was asked from (its key names the order).
        found = await deps.psp.find(order_id=str(payment.order_id))
        return authorization_outcome(found[0]) if found else None
    assert payment.psp_intent_id is not None
    current = await deps.psp.retrieve(payment.psp_intent_id)
    if current is None:
        return None
    if current.status in UNDECIDED_STATUSES:
        return Unknown(f"intent {current.id} is {current.status}")
    applied = {
        OperationKind.CAPTURE: current.status == "succeeded"
        and current.amount_received >= operation.amount,
        OperationKind.VOID: current.status == "canceled",
        OperationKind.REFUND: current.amount_refunded >= payment.refunded + operation.amount,
    }[operation.kind]
    return Approved(intent=current, reference=current.id) if applied else None


async def mark_unknown(operation: Operation, deps: PaymentDeps) -> None:
    """Record that the PSP may or may not have applied the operation."""
    async with deps.unit_of_work() as uow:
        # Under the payment's row lock, as every change of its operations' states.
        _, current = await uow.payments.locked_operation(operation.operation_id)
        if current.state in OPEN_STATES:
            await uow.payments.set_state(operation, OperationState.UNKNOWN)


async def settle(operation: Operation, outcome: Approved | Declined, deps: PaymentDeps) -> Payment:
    """Write the PSP's answer to the ledger and the payment, with its event, once."""
    return (await _settle(operation, outcome, deps)).payment


async def _settle(operation: Operation, outcome: Approved | Declined, deps: PaymentDeps) -> Ledger:
    """`settle`, with the payment's operations as they stand after it (read by the statement
    that writes the outcome, not in a statement of their own)."""
    async with deps.unit_of_work() as uow:
        # Every change of an operation's state holds its payment's row lock (settle, reopen,
        # mark_unknown), so the operation read under that lock is as the last change left it,
        # and the ledger record_outcome reads (a later statement: after the lock) is the one
        # this settlement changes.
        payment, current = await uow.payments.locked_operation(operation.operation_id)
        if not rules.awaits_outcome(current):  # a concurrent caller settled it first
            return Ledger(payment, tuple(await uow.payments.operations(payment.payment_id)))
        # A late answer for an operation reconciliation gave up on ("not applied") still wins:
        # the PSP's word is the truth, our verdict was only a reading of its silence.
        payment = rules.reopened(payment, current)
        if isinstance(outcome, Approved):
            payment = rules.after_success(payment, operation)
            if operation.kind is OperationKind.AUTHORIZE and outcome.intent is not None:
                payment = replace(
                    payment,
                    psp_intent_id=outcome.intent.id,
                    capture_before=outcome.intent.capture_before,
                )
            ledger = await uow.payments.record_outcome(payment, operation, OperationState.SUCCEEDED)
            event = events.succeeded(ledger.payment, operation)
        else:
            assert isinstance(outcome, Declined)
            payment = rules.after_failure(payment, operation, outcome.code)
            if operation.kind is OperationKind.AUTHORIZE and outcome.intent_id:
                payment = replace(payment, psp_intent_id=outcome.intent_id)
            ledger = await uow.payments.record_outcome(
                payment, operation, OperationState.FAILED, outcome.code
            )
            event = events.failed(ledger.payment, operation, outcome.code)
        payment = ledger.payment
        await uow.publish(
            event, aggregate_type=events.AGGREGATE, aggregate_id=str(payment.order_id)
        )
        log.info(
            "%s of order %s %s",
            operation.kind.lower(),
            payment.order_id,
            "succeeded" if isinstance(outcome, Approved) else f"failed: {outcome.code}",
        )
        return ledger

"""Payment use cases over an in-memory unit of work and an in-memory PSP: the rules that need a
ledger and a PSP (one authorization per order, amounts, release, cancellation, declines, lost
answers), without a database or HTTP.

The fakes keep what the rules depend on: the unit of work commits on a clean exit and throws its
writes away on an error; the repository refuses a second payment per order, a payment for a
cancelled order and a second operation per request, as the schema's constraints do; the PSP
answers a repeated idempotency key with its first answer, refuses a key reused with other
parameters, holds intents with their amounts and refuses what Stripe refuses."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message

from marketplace.events.v1 import envelope_pb2
from marketplace.events.v1 import payment_events_pb2 as events
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from services.payment.adapters import tables
from services.payment.domain.payment import (
    NEVER_APPLIED_FAILURES,
    OPEN_STATES,
    AmountExceeded,
    Operation,
    OperationInProgress,
    OperationKind,
    OperationState,
    OrderCancelled,
    Payment,
    PaymentMismatch,
    PaymentStatus,
)
from services.payment.domain.payment import Ledger as PaymentLedger
from services.payment.service_layer import payments, reconciliation, release
from services.payment.service_layer.deps import PaymentDeps
from services.payment.service_layer.ports import (
    Approved,
    Declined,
    Intent,
    PspOutcome,
    PspUnavailable,
    Unknown,
)
from tests.support.in_memory import InMemoryUnitOfWork, checked_envelope

# --- the in-memory ledger -----------------------------------------------------------------------

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_last_reading = [_EPOCH]


def _now() -> datetime:
    """The time as the database would stamp it, strictly later at every reading, so that
    ordering by time is ordering by writes."""
    now = max(datetime.now(UTC), _last_reading[0] + timedelta(microseconds=1))
    _last_reading[0] = now
    return now


@dataclass
class Ledger:
    """Everything the payment schema holds: payments, operations, cancelled orders, events."""

    payments: dict[uuid.UUID, Payment] = field(default_factory=dict)
    operations: dict[uuid.UUID, Operation] = field(default_factory=dict)
    cancelled: dict[uuid.UUID, datetime] = field(default_factory=dict)
    events: list[Message] = field(default_factory=list)

    def copy(self) -> Ledger:
        """A working copy for one transaction (the rows are immutable, the tables are not)."""
        return Ledger(
            dict(self.payments), dict(self.operations), dict(self.cancelled), list(self.events)
        )

    def by_order(self, order_id: uuid.UUID) -> Payment | None:
        """The order's payment, if it has one."""
        return next((p for p in self.payments.values() if p.order_id == order_id), None)

    def operations_of(self, order_id: uuid.UUID) -> list[Operation]:
        """The order's operations, oldest first."""
        payment = self.by_order(order_id)
        if payment is None:
            return []
        return sorted(
            (o for o in self.operations.values() if o.payment_id == payment.payment_id),
            key=lambda o: (o.created_at or _EPOCH, o.operation_id),
        )


class InMemoryPaymentRepository:
    """The PaymentRepository port over one transaction's working copy of the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def create(
        self, payment: Payment, operation: Operation
    ) -> tuple[Payment, Operation] | None:
        """Insert the order's payment with its first operation; None (and nothing inserted)
        when the order already has a payment or was cancelled."""
        if payment.order_id in self.ledger.cancelled or self.ledger.by_order(payment.order_id):
            return None
        now = _now()
        stored = replace(payment, created_at=now, updated_at=now)
        self.ledger.payments[payment.payment_id] = stored
        first = replace(operation, payment_id=stored.payment_id, created_at=now, updated_at=now)
        self.ledger.operations[first.operation_id] = first
        return stored, first

    async def mark_cancelled(self, order_id: uuid.UUID) -> None:
        """Remember that the order was cancelled (once)."""
        self.ledger.cancelled.setdefault(order_id, _now())

    async def is_cancelled(self, order_id: uuid.UUID) -> bool:
        """Whether the order was cancelled."""
        return order_id in self.ledger.cancelled

    async def cancelled_holding_money(self) -> list[Payment]:
        """Payments of cancelled orders that hold money and have no open operation."""
        holding = (
            PaymentStatus.AUTHORIZED,
            PaymentStatus.CAPTURED,
            PaymentStatus.PARTIALLY_REFUNDED,
        )
        found = [
            payment
            for payment in self.ledger.payments.values()
            if payment.order_id in self.ledger.cancelled
            and payment.status in holding
            and not any(
                o.payment_id == payment.payment_id and o.state in OPEN_STATES
                for o in self.ledger.operations.values()
            )
        ]
        return sorted(found, key=lambda p: self.ledger.cancelled[p.order_id])

    async def by_order(self, order_id: uuid.UUID, *, for_update: bool = False) -> Payment | None:
        """The order's payment."""
        return self.ledger.by_order(order_id)

    async def locked_operation(self, operation_id: uuid.UUID) -> tuple[Payment, Operation]:
        """An operation and its payment (KeyError when there is none, as `.one()` raises)."""
        operation = self.ledger.operations[operation_id]
        return self.ledger.payments[operation.payment_id], operation

    async def all_by_intent(self) -> dict[str, Payment]:
        """Every payment that has a PSP intent, by intent id."""
        return {p.psp_intent_id: p for p in self.ledger.payments.values() if p.psp_intent_id}

    async def save(self, payment: Payment) -> Payment:
        """Write the payment's status and amounts (only those, as the SQL update does)."""
        stored = self.ledger.payments[payment.payment_id]
        saved = replace(
            stored,
            status=payment.status,
            authorized=payment.authorized,
            captured=payment.captured,
            refunded=payment.refunded,
            psp_intent_id=payment.psp_intent_id,
            failure_code=payment.failure_code,
            capture_before=payment.capture_before,
            updated_at=_now(),
        )
        self.ledger.payments[payment.payment_id] = saved
        return saved

    async def record_outcome(
        self,
        payment: Payment,
        operation: Operation,
        state: OperationState,
        failure_code: str | None = None,
    ) -> PaymentLedger:
        """Write what became of an operation and the payment; the payment with its ledger."""
        await self.set_state(operation, state, failure_code)
        saved = await self.save(payment)
        return PaymentLedger(saved, tuple(await self.operations(saved.payment_id)))

    async def add_operation(self, operation: Operation) -> Operation | None:
        """Record an operation; None when the same request already has one."""
        if await self.operation(operation.payment_id, operation.kind, operation.request_key):
            return None
        now = _now()
        stored = replace(operation, created_at=now, updated_at=now)
        self.ledger.operations[operation.operation_id] = stored
        return stored

    async def operation(
        self, payment_id: uuid.UUID, kind: OperationKind, request_key: str
    ) -> Operation | None:
        """The operation recorded for one request."""
        return next(
            (
                o
                for o in self.ledger.operations.values()
                if (o.payment_id, o.kind, o.request_key) == (payment_id, kind, request_key)
            ),
            None,
        )

    async def operation_by_id(self, operation_id: uuid.UUID) -> Operation:
        """One operation (KeyError when there is none)."""
        return self.ledger.operations[operation_id]

    async def operations(self, payment_id: uuid.UUID) -> list[Operation]:
        """A payment's operations, oldest first."""
        return sorted(
            (o for o in self.ledger.operations.values() if o.payment_id == payment_id),
            key=lambda o: (o.created_at or _EPOCH, o.operation_id),
        )

    async def set_state(
        self, operation: Operation, state: OperationState, failure_code: str | None = None
    ) -> None:
        """Record what became of an operation."""
        stored = self.ledger.operations[operation.operation_id]
        self.ledger.operations[operation.operation_id] = replace(
            stored, state=state, failure_code=failure_code, updated_at=_now()
        )

    async def reopen(self, operation: Operation) -> Operation:
        """Open again, as UNKNOWN, an operation that failed without a refusal."""
        stored = self.ledger.operations[operation.operation_id]
        if stored.state is OperationState.FAILED and stored.failure_code in NEVER_APPLIED_FAILURES:
            stored = replace(
                stored, state=OperationState.UNKNOWN, failure_code=None, updated_at=_now()
            )
            self.ledger.operations[operation.operation_id] = stored
        return stored

    async def open_operations(self, older_than: datetime) -> list[tuple[Operation, Payment]]:
        """Operations still open since before `older_than`, with their payment."""
        found = sorted(
            (
                o
                for o in self.ledger.operations.values()
                if o.state in OPEN_STATES and o.created_at is not None and o.created_at < older_than
            ),
            key=lambda o: o.created_at or _EPOCH,
        )
        return [(o, self.ledger.payments[o.payment_id]) for o in found]


class LedgerUnitOfWork(InMemoryUnitOfWork):
    """The AbstractPaymentUnitOfWork port as one transaction over the in-memory ledger: its
    writes (and events) land together on a clean exit, and none of them on an error. It has no
    session: a use case touching `uow.session` fails."""

    payments: InMemoryPaymentRepository

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._outbox = OutboxWriter(tables.outbox, producer="payment")

    def begin(self) -> None:
        self._working = self._ledger.copy()
        self.payments = InMemoryPaymentRepository(self._working)

    def commit(self) -> None:
        committed = self._working
        self._ledger.payments = committed.payments
        self._ledger.operations = committed.operations
        self._ledger.cancelled = committed.cancelled
        self._ledger.events = committed.events

    async def publish(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Record the event in this transaction, refusing a malformed one as the outbox does."""
        envelope = checked_envelope(
            self._outbox, payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id
        )
        self._working.events.append(payload)
        return envelope


# --- the in-memory PSP --------------------------------------------------------------------------

DECLINING_METHODS = {"pm_card_chargeDeclined": "generic_decline"}


class InMemoryPsp:
    """The PaymentProvider port as a Stripe-like PSP in memory: intents with their amounts, an
    idempotency key answered with its first answer. `lose_answers` makes that many next
    mutating calls apply and then lose their answer (Unknown), like a timeout after the PSP
    committed; `lose_requests` makes that many be lost before the PSP sees them (Unknown,
    nothing applied)."""

    def __init__(self) -> None:
        self.intents: dict[str, Intent] = {}
        self.sent: list[tuple[str, str]] = []  # (call, idempotency key) of every mutating call
        self.lose_answers = 0
        self.lose_requests = 0
        self._answers: dict[str, tuple[tuple[object, ...], PspOutcome]] = {}

    def calls(self, name: str) -> int:
        """How many mutating calls of this name reached the PSP (repeats of a key included)."""
        return sum(1 for call, _ in self.sent if call == name)

    async def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> PspOutcome:
        """Authorize: a held intent, or a declined one for a declining payment method."""
        params = ("create", amount, currency, payment_method, tuple(sorted(metadata.items())))

        def apply() -> PspOutcome:
            created = datetime.now(UTC)
            intent = Intent(
                id=f"pi_{secrets.token_hex(8)}",
                status="requires_capture",
                amount=amount,
                currency=currency,
                amount_capturable=amount,
                amount_received=0,
                amount_refunded=0,
                metadata=dict(metadata),
                capture_before=created + timedelta(days=7),
                created=created,
            )
            decline = DECLINING_METHODS.get(payment_method)
            if decline is not None:
                intent = replace(
                    intent,
                    status="requires_payment_method",
                    amount_capturable=0,
                    decline_code=decline,
                )
                self.intents[intent.id] = intent
                return Declined(code=decline, intent_id=intent.id)
            self.intents[intent.id] = intent
            return Approved(intent=intent, reference=intent.id)

        return self._once("create_intent", idempotency_key, params, apply)

    async def capture(self, intent_id: str, *, amount: int, idempotency_key: str) -> PspOutcome:
        """Capture up to what the intent holds."""

        def apply() -> PspOutcome:
            intent = self.intents.get(intent_id)
            if intent is None:
                return Declined(code="resource_missing")
            if intent.status != "requires_capture":
                return Declined(code="payment_intent_unexpected_state", intent_id=intent_id)
            if amount > intent.amount_capturable:
                return Declined(code="amount_too_large", intent_id=intent_id)
            captured = replace(
                intent, status="succeeded", amount_received=amount, amount_capturable=0
            )
            self.intents[intent_id] = captured
            return Approved(intent=captured, reference=intent_id)

        return self._once("capture", idempotency_key, ("capture", intent_id, amount), apply)

    async def cancel(self, intent_id: str, *, idempotency_key: str) -> PspOutcome:
        """Void an uncaptured (or declined) intent."""

        def apply() -> PspOutcome:
            intent = self.intents.get(intent_id)
            if intent is None:
                return Declined(code="resource_missing")
            if intent.status not in ("requires_capture", "requires_payment_method"):
                return Declined(code="payment_intent_unexpected_state", intent_id=intent_id)
            canceled = replace(intent, status="canceled", amount_capturable=0)
            self.intents[intent_id] = canceled
            return Approved(intent=canceled, reference=intent_id)

        return self._once("cancel", idempotency_key, ("cancel", intent_id), apply)

    async def refund(self, intent_id: str, *, amount: int, idempotency_key: str) -> PspOutcome:
        """Refund up to what was captured and not yet refunded."""

        def apply() -> PspOutcome:
            intent = self.intents.get(intent_id)
            if intent is None:
                return Declined(code="resource_missing")
            if intent.status != "succeeded":
                return Declined(code="payment_intent_unexpected_state", intent_id=intent_id)
            if amount > intent.amount_received - intent.amount_refunded:
                return Declined(code="amount_too_large", intent_id=intent_id)
            self.intents[intent_id] = replace(
                intent, amount_refunded=intent.amount_refunded + amount
            )
            return Approved(intent=None, reference=f"re_{secrets.token_hex(8)}")

        return self._once("refund", idempotency_key, ("refund", intent_id, amount), apply)

    async def retrieve(self, intent_id: str) -> Intent | None:
        """The intent as it stands (None if there is none)."""
        return self.intents.get(intent_id)

    async def find(self, **metadata: str) -> list[Intent]:
        """Intents whose metadata has these values."""
        return [
            intent
            for intent in self.intents.values()
            if all(intent.metadata.get(k) == v for k, v in metadata.items())
        ]

    async def every_intent(self) -> AsyncIterator[Intent]:
        """All intents, oldest first."""
        for intent in list(self.intents.values()):
            yield intent

    def _once(
        self,
        call: str,
        key: str,
        params: tuple[object, ...],
        apply: Callable[[], PspOutcome],
    ) -> PspOutcome:
        """Apply a mutating call once per idempotency key: a repeat gets the first answer."""
        self.sent.append((call, key))
        if self.lose_requests:
            self.lose_requests -= 1
            return Unknown("the request was lost")
        first = self._answers.get(key)
        if first is not None:
            if first[0] != params:
                raise RuntimeError(f"PSP idempotency key {key} reused with other parameters")
            outcome = first[1]
        else:
            outcome = apply()
            assert isinstance(outcome, Approved | Declined)
            self._answers[key] = (params, outcome)
        if self.lose_answers:
            self.lose_answers -= 1
            return Unknown("the answer was lost")
        return outcome


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def psp() -> InMemoryPsp:
    return InMemoryPsp()


@pytest.fixture
def deps(ledger: Ledger, psp: InMemoryPsp) -> PaymentDeps:
    return PaymentDeps(unit_of_work=lambda: LedgerUnitOfWork(ledger), psp=psp, backoff_seconds=0.0)


def authorize_command(
    order: uuid.UUID, *, amount: int = 2500, method: str = "pm_card_visa"
) -> payments.Authorize:
    return payments.Authorize(
        order_id=order,
        customer_id="customer-1",
        amount=amount,
        currency="USD",
        payment_method=method,
    )


def capture_command(order: uuid.UUID, amount: int, key: str = "capture-1") -> payments.Operate:
    return payments.Operate(
        order_id=order, kind=OperationKind.CAPTURE, amount=amount, currency="USD", request_key=key
    )


def new_order() -> uuid.UUID:
    return uuid.UUID(str(new_id()))


def states(ledger: Ledger, order: uuid.UUID) -> list[tuple[OperationKind, OperationState]]:
    return [(o.kind, o.state) for o in ledger.operations_of(order)]


# --- authorization ------------------------------------------------------------------------------


async def test_a_repeated_authorization_returns_the_same_payment_and_calls_the_psp_once(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()

    first = await payments.authorize(authorize_command(order), deps)
    again = await payments.authorize(authorize_command(order), deps)

    assert first.status is PaymentStatus.AUTHORIZED
    assert (again.payment_id, again.status, again.authorized) == (
        first.payment_id,
        PaymentStatus.AUTHORIZED,
        2500,
    )
    assert psp.calls("create_intent") == 1
    assert len(psp.intents) == 1
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.SUCCEEDED)]
    assert [type(e) for e in ledger.events] == [events.PaymentAuthorized]


async def test_an_authorization_repeated_with_another_amount_is_refused_and_writes_nothing(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    await payments.authorize(authorize_command(order), deps)
    before = ledger.copy()

    with pytest.raises(PaymentMismatch):
        await payments.authorize(authorize_command(order, amount=2600), deps)

    assert psp.calls("create_intent") == 1
    assert (ledger.payments, ledger.operations, ledger.events) == (
        before.payments,
        before.operations,
        before.events,
    )


async def test_a_declined_authorization_is_recorded_as_declined_and_not_sent_again(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()

    declined = await payments.authorize(
        authorize_command(order, method="pm_card_chargeDeclined"), deps
    )
    again = await payments.authorize(
        authorize_command(order, method="pm_card_chargeDeclined"), deps
    )

    assert (declined.status, declined.failure_code, declined.authorized) == (
        PaymentStatus.FAILED,
        "generic_decline",
        0,
    )
    assert declined.psp_intent_id in psp.intents
    assert again.status is PaymentStatus.FAILED
    assert psp.calls("create_intent") == 1  # a refusal is final: a repeat is answered, not sent
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.FAILED)]
    [failed] = ledger.events
    assert isinstance(failed, events.PaymentFailed)
    assert failed.failure_code == "generic_decline"


async def test_a_lost_answer_is_resolved_by_asking_the_psp_never_by_sending_again(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    psp.lose_answers = 1  # the PSP authorizes, the answer never arrives

    payment = await payments.authorize(authorize_command(order), deps)

    assert payment.status is PaymentStatus.AUTHORIZED
    assert psp.calls("create_intent") == 1
    assert [intent.id for intent in psp.intents.values()] == [payment.psp_intent_id]
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.SUCCEEDED)]


async def test_reconciliation_settles_an_authorization_whose_answers_were_all_lost(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    psp.lose_answers = 1
    with pytest.raises(PspUnavailable):
        await payments.authorize(authorize_command(order), replace(deps, attempts=1))
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.UNKNOWN)]

    report = await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0)), deps
    )

    assert [p.order_id for _, p, _ in report.resolved] == [order]
    payment = ledger.by_order(order)
    assert payment is not None
    assert payment.status is PaymentStatus.AUTHORIZED
    assert psp.calls("create_intent") == 1


async def test_reconciliation_waits_out_the_owner_before_reading_silence_as_not_applied(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    psp.lose_requests = 1  # the PSP never saw the authorization
    with pytest.raises(PspUnavailable):
        await payments.authorize(authorize_command(order), replace(deps, attempts=1))

    # Within the owner horizon (15 minutes by default) the PSP's silence proves nothing.
    early = await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0)), deps
    )
    assert early.resolved == []
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.UNKNOWN)]

    # Past it, the operation failed without being applied, and a repeat tries it again.
    await reconciliation.reconcile(
        reconciliation.Reconcile(in_flight_grace=timedelta(0), owner_horizon=timedelta(0)), deps
    )
    [operation] = ledger.operations_of(order)
    assert (operation.state, operation.failure_code) == (OperationState.FAILED, "not_applied")
    failed = ledger.by_order(order)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED

    retried = await payments.authorize(authorize_command(order), deps)

    assert retried.status is PaymentStatus.AUTHORIZED
    assert len(psp.intents) == 1
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.SUCCEEDED)]


async def test_an_answer_for_an_operation_settled_already_changes_nothing(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    # Two callers drove the same operation (the owner and reconciliation): the second answer
    # to arrive finds it settled, and neither the payment nor the events change.
    order = new_order()
    authorized = await payments.authorize(authorize_command(order), deps)
    [operation] = ledger.operations_of(order)

    late = await payments.settle(operation, Declined(code="card_declined"), deps)

    assert (late.status, late.failure_code) == (PaymentStatus.AUTHORIZED, None)
    assert ledger.by_order(order) == authorized
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.SUCCEEDED)]
    assert [type(e) for e in ledger.events] == [events.PaymentAuthorized]


# --- capture ------------------------------------------------------------------------------------


async def test_a_capture_above_the_authorization_is_refused_before_the_psp(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    await payments.authorize(authorize_command(order, amount=2500), deps)

    with pytest.raises(AmountExceeded):
        await payments.operate(capture_command(order, 2501), deps)

    assert psp.calls("capture") == 0
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.SUCCEEDED)]
    captured = await payments.operate(capture_command(order, 2500), deps)
    assert (captured.status, captured.captured) == (PaymentStatus.CAPTURED, 2500)


async def test_a_repeated_capture_request_is_one_capture(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    await payments.authorize(authorize_command(order), deps)

    first = await payments.operate(capture_command(order, 2000), deps)
    again = await payments.operate(capture_command(order, 2000), deps)

    assert (first.captured, again.captured) == (2000, 2000)
    assert psp.calls("capture") == 1
    assert [type(e) for e in ledger.events] == [events.PaymentAuthorized, events.PaymentCaptured]


async def test_a_capture_refused_because_it_is_done_already_is_settled_as_captured(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    authorized = await payments.authorize(authorize_command(order), deps)
    assert authorized.psp_intent_id is not None
    # Captured at the PSP under another key (another Region's, whose ledger this one lost).
    await psp.capture(authorized.psp_intent_id, amount=2500, idempotency_key="elsewhere")

    captured = await payments.operate(capture_command(order, 2500), deps)

    assert (captured.status, captured.captured) == (PaymentStatus.CAPTURED, 2500)
    assert psp.intents[authorized.psp_intent_id].amount_received == 2500  # captured once
    assert states(ledger, order)[-1] == (OperationKind.CAPTURE, OperationState.SUCCEEDED)


async def test_a_void_refused_because_it_is_done_already_is_settled_as_voided(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    authorized = await payments.authorize(authorize_command(order), deps)
    assert authorized.psp_intent_id is not None
    await psp.cancel(authorized.psp_intent_id, idempotency_key="elsewhere")

    voided = await payments.void(payments.Void(order_id=order, request_key="void-1"), deps)

    assert voided is not None
    assert voided.status is PaymentStatus.VOIDED
    assert states(ledger, order)[-1] == (OperationKind.VOID, OperationState.SUCCEEDED)


async def test_a_capture_refused_for_a_voided_intent_stays_refused(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    authorized = await payments.authorize(authorize_command(order), deps)
    assert authorized.psp_intent_id is not None
    await psp.cancel(authorized.psp_intent_id, idempotency_key="elsewhere")

    refused = await payments.operate(capture_command(order, 2500), deps)

    assert (refused.status, refused.captured) == (PaymentStatus.AUTHORIZED, 0)
    assert states(ledger, order)[-1] == (OperationKind.CAPTURE, OperationState.FAILED)


# --- release and cancellation -------------------------------------------------------------------


async def test_a_release_after_capture_refunds_what_was_captured_once(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    authorized = await payments.authorize(authorize_command(order), deps)
    await payments.operate(capture_command(order, 2000), deps)

    released = await release.release(release.Release(order_id=order), deps)
    again = await release.release(release.Release(order_id=order), deps)

    assert released.settled
    assert again.settled
    assert released.payment is not None
    assert (released.payment.status, released.payment.refunded) == (PaymentStatus.REFUNDED, 2000)
    assert psp.calls("refund") == 1
    assert psp.calls("cancel") == 0
    assert authorized.psp_intent_id is not None
    assert psp.intents[authorized.psp_intent_id].amount_refunded == 2000
    assert states(ledger, order)[-1] == (OperationKind.REFUND, OperationState.SUCCEEDED)
    assert isinstance(ledger.events[-1], events.PaymentRefunded)


async def test_a_release_before_capture_voids_the_authorization(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    authorized = await payments.authorize(authorize_command(order), deps)

    released = await release.release(release.Release(order_id=order), deps)

    assert released.settled
    assert released.payment is not None
    assert released.payment.status is PaymentStatus.VOIDED
    assert authorized.psp_intent_id is not None
    assert psp.intents[authorized.psp_intent_id].status == "canceled"
    assert psp.calls("refund") == 0


async def test_an_authorization_after_a_release_is_refused_with_order_cancelled(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    # The cancellation overtook the authorization: the order never had a payment.
    order = new_order()
    released = await release.release(release.Release(order_id=order), deps)
    assert (released.payment, released.settled) == (None, True)

    with pytest.raises(OrderCancelled) as refused:
        await payments.authorize(authorize_command(order), deps)

    assert refused.value.reason == "ORDER_CANCELLED"
    assert psp.calls("create_intent") == 0
    assert ledger.by_order(order) is None


async def test_an_authorization_repeated_after_its_release_is_refused_with_order_cancelled(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    await payments.authorize(authorize_command(order), deps)
    await release.release(release.Release(order_id=order), deps)

    with pytest.raises(OrderCancelled):
        await payments.authorize(authorize_command(order), deps)

    assert psp.calls("create_intent") == 1
    payment = ledger.by_order(order)
    assert payment is not None
    assert payment.status is PaymentStatus.VOIDED


async def test_a_release_settles_an_abandoned_authorization_from_the_psp_then_voids_it(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    # The authorization's answer was lost (UNKNOWN) and the cancellation ends its owner: the
    # release asks the PSP, which authorized it, and gives the hold back. Nothing is resent.
    order = new_order()
    psp.lose_answers = 1
    with pytest.raises(PspUnavailable):
        await payments.authorize(authorize_command(order), replace(deps, attempts=1))

    released = await release.release(release.Release(order_id=order), deps)

    assert released.settled
    assert released.payment is not None
    assert released.payment.status is PaymentStatus.VOIDED
    assert psp.calls("create_intent") == 1
    assert [intent.status for intent in psp.intents.values()] == ["canceled"]
    assert states(ledger, order) == [
        (OperationKind.AUTHORIZE, OperationState.SUCCEEDED),
        (OperationKind.VOID, OperationState.SUCCEEDED),
    ]


async def test_a_release_while_the_psp_cannot_tell_is_refused_but_marks_the_order_cancelled(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    psp.lose_answers = 1
    with pytest.raises(PspUnavailable):
        await payments.authorize(authorize_command(order), replace(deps, attempts=1))
    [intent] = psp.intents.values()
    psp.intents[intent.id] = replace(intent, status="processing")  # not decided yet

    with pytest.raises(OperationInProgress):
        await release.release(release.Release(order_id=order), deps)

    assert order in ledger.cancelled  # committed before the refusal: a late hold is released
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.UNKNOWN)]


async def test_a_capture_of_a_cancelled_orders_authorization_is_refused_with_order_cancelled(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    # The cancellation is recorded while the authorization still holds (its release is yet to
    # come): the hold is never captured.
    order = new_order()
    await payments.authorize(authorize_command(order), deps)
    async with deps.unit_of_work() as uow:
        await uow.payments.mark_cancelled(order)

    with pytest.raises(OrderCancelled):
        await payments.operate(capture_command(order, 2500), deps)

    assert psp.calls("capture") == 0
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.SUCCEEDED)]


async def test_a_void_of_a_declined_payment_succeeds_without_calling_the_psp(
    deps: PaymentDeps, ledger: Ledger, psp: InMemoryPsp
) -> None:
    order = new_order()
    await payments.authorize(authorize_command(order, method="pm_card_chargeDeclined"), deps)

    voided = await payments.void(payments.Void(order_id=order, request_key="void-1"), deps)

    assert voided is not None
    assert voided.status is PaymentStatus.FAILED
    assert psp.calls("cancel") == 0
    assert states(ledger, order) == [(OperationKind.AUTHORIZE, OperationState.FAILED)]


async def test_a_void_of_an_order_without_payment_is_none(deps: PaymentDeps) -> None:
    assert await payments.void(payments.Void(order_id=new_order(), request_key="v-1"), deps) is None

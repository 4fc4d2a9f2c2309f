"""Reads and writes of payments, their operations and the cancelled orders: the SQL adapter of
the service layer's PaymentRepository port."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, select, true, union_all
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment.adapters.tables import cancelled_orders, payment_operations, payments
from services.payment.domain.payment import (
    NEVER_APPLIED_FAILURES,
    OPEN_STATES,
    Ledger,
    Operation,
    OperationKind,
    OperationState,
    Payment,
    PaymentStatus,
)

_PAYMENT_FIELDS = (
    "status",
    "authorized",
    "captured",
    "refunded",
    "psp_intent_id",
    "failure_code",
    "capture_before",
)

# The prefix of an operation's columns (and values) where a statement has its payment's too.
_OP = "operation_"

# The statements of the hot path, built once (their values are bound at execution, so each is
# compiled once per process and never keyed again).
_CREATED = [c.name for c in payments.c if c.name not in ("created_at", "updated_at")]
_OPERATION_CREATED = [
    c.name for c in payment_operations.c if c.name not in ("created_at", "updated_at")
]
_created_payment = (
    insert(payments)
    .from_select(
        _CREATED,
        select(*(bindparam(name, type_=payments.c[name].type).label(name) for name in _CREATED))
        # The cancellation check is part of the insert (the order's id bound once, above).
        .where(~exists().where(cancelled_orders.c.order_id == bindparam("order_id"))),
    )
    .on_conflict_do_nothing(index_elements=[payments.c.order_id])
    .returning(*payments.c)
    .cte("created_payment")
)
# The first operation goes in only with the payment it belongs to: nothing when the order
# already had a payment or was cancelled.
_created_operation = (
    insert(payment_operations)
    .from_select(
        _OPERATION_CREATED,
        select(
            *(
                _created_payment.c.payment_id
                if name == "payment_id"
                else bindparam(_OP + name, type_=payment_operations.c[name].type).label(name)
                for name in _OPERATION_CREATED
            )
        ).select_from(_created_payment),
    )
    .returning(*payment_operations.c)
    .cte("created_operation")
)
_CREATE = select(
    _created_payment, *(c.label(_OP + c.name) for c in _created_operation.c)
).select_from(_created_payment.join(_created_operation, true()))
_BY_ORDER = select(payments).where(payments.c.order_id == bindparam("order_id"))
_BY_ORDER_FOR_UPDATE = _BY_ORDER.with_for_update()
# The payment's row lock first, then the operation's (the order of FOR UPDATE OF is the order
# they are taken in, as in every other locker: payment, then operation). Locking the
# operation too makes it read as the last committed change left it, also one that did not
# touch the payment row (a statement reads as of its start, before any wait for a lock,
# except the rows it locks).
_LOCKED_OPERATION = (
    select(payments, *(c.label(_OP + c.name) for c in payment_operations.c))
    .join_from(
        payments, payment_operations, payment_operations.c.payment_id == payments.c.payment_id
    )
    .where(payment_operations.c.operation_id == bindparam("operation_key"))
    .with_for_update(of=[payments, payment_operations])
)
_SAVE = (
    payments.update()
    .where(payments.c.payment_id == bindparam("payment_key"))
    .values({**{name: bindparam(name) for name in _PAYMENT_FIELDS}, "updated_at": func.now()})
    .returning(*payments.c)
)
_IS_CANCELLED = select(cancelled_orders.c.order_id).where(
    cancelled_orders.c.order_id == bindparam("order_id")
)
_MARK_CANCELLED = insert(cancelled_orders).on_conflict_do_nothing()
_ADD_OPERATION = (
    insert(payment_operations)
    .on_conflict_do_nothing(constraint="operation_per_request")
    .returning(*payment_operations.c)
)
_OPERATION = select(payment_operations).where(
    payment_operations.c.payment_id == bindparam("payment_key"),
    payment_operations.c.kind == bindparam("kind"),
    payment_operations.c.request_key == bindparam("request_key"),
)
_OPERATION_BY_ID_FOR_UPDATE = (
    select(payment_operations)
    .where(payment_operations.c.operation_id == bindparam("operation_key"))
    .with_for_update()
)
_OPERATIONS = (
    select(payment_operations)
    .where(payment_operations.c.payment_id == bindparam("payment_key"))
    .order_by(payment_operations.c.created_at, payment_operations.c.operation_id)
)
_SET_STATE = (
    payment_operations.update()
    .where(payment_operations.c.operation_id == bindparam("operation_key"))
    .values(state=bindparam("state"), failure_code=bindparam("failure_code"), updated_at=func.now())
)
# An outcome in one statement: the operation's state, the payment's, and the payment's ledger
# as they leave it (its other operations as this statement found them, read after the caller
# took the payment's lock; this one as written).
_settled_operation = (
    payment_operations.update()
    .where(payment_operations.c.operation_id == bindparam("operation_key"))
    .values(
        state=bindparam(_OP + "state"),
        failure_code=bindparam(_OP + "failure_code"),
        updated_at=func.now(),
    )
    .returning(*payment_operations.c)
    .cte("settled_operation")
)
_saved_payment = _SAVE.cte("saved_payment")
_ledger = union_all(
    select(payment_operations).where(
        payment_operations.c.payment_id == bindparam("payment_key"),
        payment_operations.c.operation_id != bindparam("operation_key"),
    ),
    select(_settled_operation),
).subquery("ledger")
_RECORD_OUTCOME = (
    select(_saved_payment, *(c.label(_OP + c.name) for c in _ledger.c))
    .select_from(_saved_payment.join(_ledger, true()))
    .order_by(_ledger.c.created_at, _ledger.c.operation_id)
)


class SqlPaymentRepository:
    """The PaymentRepository of the payment schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self, payment: Payment, operation: Operation
    ) -> tuple[Payment, Operation] | None:
        """Insert the order's payment with its first operation, in one statement; None (and
        nothing inserted) when the order already has a payment or was cancelled.

        The cancellation check is part of the insert, so a first authorization costs no extra
        statement; which of the two it was is for the caller to find out.
        """
        values = asdict(payment)
        operation_values = asdict(operation)
        row = (
            (
                await self.session.execute(
                    _CREATE,
                    {name: values[name] for name in _CREATED}
                    | {
                        _OP + name: operation_values[name]
                        for name in _OPERATION_CREATED
                        if name != "payment_id"  # the payment's, as created
                    },
                )
            )
            .mappings()
            .one_or_none()
        )
        return (_payment(row), _operation(row, _OP)) if row else None

    async def mark_cancelled(self, order_id: uuid.UUID) -> None:
        """Remember that the order was cancelled (once; a repeat changes nothing)."""
        await self.session.execute(_MARK_CANCELLED, {"order_id": order_id})

    async def is_cancelled(self, order_id: uuid.UUID) -> bool:
        """Whether the order's payment was released because the order was cancelled."""
        found = await self.session.execute(_IS_CANCELLED, {"order_id": order_id})
        return found.first() is not None

    async def cancelled_holding_money(self) -> list[Payment]:
        """Payments of cancelled orders that still hold money and have no open operation."""
        still_open = exists().where(
            payment_operations.c.payment_id == payments.c.payment_id,
            payment_operations.c.state.in_(OPEN_STATES),
        )
        rows = (
            await self.session.execute(
                select(payments)
                .join(cancelled_orders, cancelled_orders.c.order_id == payments.c.order_id)
                .where(
                    payments.c.status.in_(
                        (
                            PaymentStatus.AUTHORIZED,
                            PaymentStatus.CAPTURED,
                            PaymentStatus.PARTIALLY_REFUNDED,
                        )
                    ),
                    ~still_open,
                )
                .order_by(cancelled_orders.c.cancelled_at)
            )
        ).mappings()
        return [_payment(row) for row in rows]

    async def by_order(self, order_id: uuid.UUID, *, for_update: bool = False) -> Payment | None:
        """The order's payment (row-locked when for_update)."""
        query = _BY_ORDER_FOR_UPDATE if for_update else _BY_ORDER
        row = (await self.session.execute(query, {"order_id": order_id})).mappings().one_or_none()
        return _payment(row) if row else None

    async def locked_operation(self, operation_id: uuid.UUID) -> tuple[Payment, Operation]:
        """An operation and its payment, both row-locked (the payment's lock first), each as
        the last committed change left it."""
        found = await self.session.execute(_LOCKED_OPERATION, {"operation_key": operation_id})
        row = found.mappings().one()
        return _payment(row), _operation(row, _OP)

    async def all_by_intent(self) -> dict[str, Payment]:
        """Every payment that has a PSP intent, by intent id."""
        rows = (
            await self.session.execute(
                select(payments).where(payments.c.psp_intent_id.is_not(None))
            )
        ).mappings()
        return {row["psp_intent_id"]: _payment(row) for row in rows}

    async def save(self, payment: Payment) -> Payment:
        """Write the payment's status and amounts."""
        values = {name: getattr(payment, name) for name in _PAYMENT_FIELDS}
        found = await self.session.execute(_SAVE, {**values, "payment_key": payment.payment_id})
        return _payment(found.mappings().one())

    async def record_outcome(
        self,
        payment: Payment,
        operation: Operation,
        state: OperationState,
        failure_code: str | None = None,
    ) -> Ledger:
        """Write what became of an operation and the payment's status and amounts, in one
        statement, under the payment's lock (`locked_operation`): the payment as stored, with
        its operations as they now stand (read after that lock was taken)."""
        values = {name: getattr(payment, name) for name in _PAYMENT_FIELDS}
        rows = (
            (
                await self.session.execute(
                    _RECORD_OUTCOME,
                    values
                    | {
                        "payment_key": payment.payment_id,
                        "operation_key": operation.operation_id,
                        _OP + "state": state,
                        _OP + "failure_code": failure_code,
                    },
                )
            )
            .mappings()
            .all()
        )
        assert rows, f"no operation {operation.operation_id} of payment {payment.payment_id}"
        return Ledger(_payment(rows[0]), tuple(_operation(row, _OP) for row in rows))

    async def add_operation(self, operation: Operation) -> Operation | None:
        """Record an operation; None when the same request already has one."""
        values = {
            k: v for k, v in asdict(operation).items() if k not in ("created_at", "updated_at")
        }
        row = (await self.session.execute(_ADD_OPERATION, values)).mappings().one_or_none()
        return _operation(row) if row else None

    async def operation(
        self, payment_id: uuid.UUID, kind: OperationKind, request_key: str
    ) -> Operation | None:
        """The operation recorded for one request."""
        found = await self.session.execute(
            _OPERATION, {"payment_key": payment_id, "kind": kind, "request_key": request_key}
        )
        row = found.mappings().one_or_none()
        return _operation(row) if row else None

    async def operation_by_id(self, operation_id: uuid.UUID) -> Operation:
        """One operation, locked for the transaction."""
        found = await self.session.execute(
            _OPERATION_BY_ID_FOR_UPDATE, {"operation_key": operation_id}
        )
        return _operation(found.mappings().one())

    async def operations(self, payment_id: uuid.UUID) -> list[Operation]:
        """A payment's operations, oldest first."""
        rows = (await self.session.execute(_OPERATIONS, {"payment_key": payment_id})).mappings()
        return [_operation(row) for row in rows]

    async def set_state(
        self, operation: Operation, state: OperationState, failure_code: str | None = None
    ) -> None:
        """Record what became of an operation."""
        await self.session.execute(
            _SET_STATE,
            {"operation_key": operation.operation_id, "state": state, "failure_code": failure_code},
        )

    async def reopen(self, operation: Operation) -> Operation:
        """Open again an operation that failed without a refusal, as UNKNOWN (so it is looked
        up before it is sent again); the operation as it now stands, whoever changed it."""
        await self.session.execute(
            payment_operations.update()
            .where(
                payment_operations.c.operation_id == operation.operation_id,
                payment_operations.c.state == OperationState.FAILED,
                payment_operations.c.failure_code.in_(NEVER_APPLIED_FAILURES),
            )
            .values(state=OperationState.UNKNOWN, failure_code=None, updated_at=func.now())
        )
        return await self.operation_by_id(operation.operation_id)

    async def open_operations(self, older_than: datetime) -> list[tuple[Operation, Payment]]:
        """Operations still pending or unknown since before `older_than`, with their payment."""
        rows = (
            (
                await self.session.execute(
                    select(payment_operations, payments.c.order_id)
                    .join(payments, payments.c.payment_id == payment_operations.c.payment_id)
                    .where(
                        payment_operations.c.state.in_(OPEN_STATES),
                        payment_operations.c.created_at < older_than,
                    )
                    .order_by(payment_operations.c.created_at)
                )
            )
            .mappings()
            .all()
        )
        found = []
        for row in rows:
            payment = await self.by_order(row["order_id"])
            assert payment is not None
            found.append((_operation(row), payment))
        return found


def _payment(row: Any) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        currency=row["currency"],
        payment_method=row["payment_method"],
        amount=row["amount"],
        status=PaymentStatus(row["status"]),
        authorized=row["authorized"],
        captured=row["captured"],
        refunded=row["refunded"],
        psp_intent_id=row["psp_intent_id"],
        failure_code=row["failure_code"],
        capture_before=row["capture_before"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _operation(row: Any, prefix: str = "") -> Operation:
    """The operation in a row, its columns named `prefix` + column (beside its payment's)."""
    return Operation(
        operation_id=row[prefix + "operation_id"],
        payment_id=row[prefix + "payment_id"],
        kind=OperationKind(row[prefix + "kind"]),
        amount=row[prefix + "amount"],
        state=OperationState(row[prefix + "state"]),
        request_key=row[prefix + "request_key"],
        failure_code=row[prefix + "failure_code"],
        created_at=row[prefix + "created_at"],
        updated_at=row[prefix + "updated_at"],
    )

"""Reads and writes of payments, their operations and the cancelled orders: the SQL adapter of
the service layer's PaymentRepository port."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment.adapters.tables import cancelled_orders, payment_operations, payments
from services.payment.domain.payment import (
    NEVER_APPLIED_FAILURES,
    OPEN_STATES,
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


class SqlPaymentRepository:
    """The PaymentRepository of the payment schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, payment: Payment) -> Payment | None:
        """Insert the order's payment; None when the order already has one or was cancelled.

        The cancellation check is part of the insert, so a first authorization costs no extra
        statement; which of the two it was is for the caller to find out.
        """
        values = {k: v for k, v in asdict(payment).items() if k not in ("created_at", "updated_at")}
        source = select(
            *(literal(value, payments.c[name].type).label(name) for name, value in values.items())
        ).where(~exists().where(cancelled_orders.c.order_id == payment.order_id))
        row = (
            (
                await self.session.execute(
                    insert(payments)
                    .from_select(list(values), source)
                    .on_conflict_do_nothing(index_elements=[payments.c.order_id])
                    .returning(*payments.c)
                )
            )
            .mappings()
            .one_or_none()
        )
        return _payment(row) if row else None

    async def mark_cancelled(self, order_id: uuid.UUID) -> None:
        """Remember that the order was cancelled (once; a repeat changes nothing)."""
        await self.session.execute(
            insert(cancelled_orders).values(order_id=order_id).on_conflict_do_nothing()
        )

    async def is_cancelled(self, order_id: uuid.UUID) -> bool:
        """Whether the order's payment was released because the order was cancelled."""
        found = await self.session.execute(
            select(cancelled_orders.c.order_id).where(cancelled_orders.c.order_id == order_id)
        )
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
        query = select(payments).where(payments.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().one_or_none()
        return _payment(row) if row else None

    async def by_id(self, payment_id: uuid.UUID, *, for_update: bool = False) -> Payment:
        """A payment by its id (row-locked when for_update)."""
        query = select(payments).where(payments.c.payment_id == payment_id)
        if for_update:
            query = query.with_for_update()
        return _payment((await self.session.execute(query)).mappings().one())

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
        row = (
            (
                await self.session.execute(
                    payments.update()
                    .where(payments.c.payment_id == payment.payment_id)
                    .values(**values, updated_at=func.now())
                    .returning(*payments.c)
                )
            )
            .mappings()
            .one()
        )
        return _payment(row)

    async def add_operation(self, operation: Operation) -> Operation | None:
        """Record an operation; None when the same request already has one."""
        values = {
            k: v for k, v in asdict(operation).items() if k not in ("created_at", "updated_at")
        }
        row = (
            (
                await self.session.execute(
                    insert(payment_operations)
                    .values(**values)
                    .on_conflict_do_nothing(constraint="operation_per_request")
                    .returning(*payment_operations.c)
                )
            )
            .mappings()
            .one_or_none()
        )
        return _operation(row) if row else None

    async def operation(
        self, payment_id: uuid.UUID, kind: OperationKind, request_key: str
    ) -> Operation | None:
        """The operation recorded for one request."""
        row = (
            (
                await self.session.execute(
                    select(payment_operations).where(
                        payment_operations.c.payment_id == payment_id,
                        payment_operations.c.kind == kind,
                        payment_operations.c.request_key == request_key,
                    )
                )
            )
            .mappings()
            .one_or_none()
        )
        return _operation(row) if row else None

    async def operation_by_id(self, operation_id: uuid.UUID) -> Operation:
        """One operation, locked for the transaction."""
        row = (
            (
                await self.session.execute(
                    select(payment_operations)
                    .where(payment_operations.c.operation_id == operation_id)
                    .with_for_update()
                )
            )
            .mappings()
            .one()
        )
        return _operation(row)

    async def operations(self, payment_id: uuid.UUID) -> list[Operation]:
        """A payment's operations, oldest first."""
        rows = (
            await self.session.execute(
                select(payment_operations)
                .where(payment_operations.c.payment_id == payment_id)
                .order_by(payment_operations.c.created_at, payment_operations.c.operation_id)
            )
        ).mappings()
        return [_operation(row) for row in rows]

    async def set_state(
        self, operation: Operation, state: OperationState, failure_code: str | None = None
    ) -> None:
        """Record what became of an operation."""
        await self.session.execute(
            payment_operations.update()
            .where(payment_operations.c.operation_id == operation.operation_id)
            .values(state=state, failure_code=failure_code, updated_at=func.now())
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


def _operation(row: Any) -> Operation:
    return Operation(
        operation_id=row["operation_id"],
        payment_id=row["payment_id"],
        kind=OperationKind(row["kind"]),
        amount=row["amount"],
        state=OperationState(row["state"]),
        request_key=row["request_key"],
        failure_code=row["failure_code"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )

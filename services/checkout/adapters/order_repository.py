"""Orders in PostgreSQL: the aggregate with its lines and shipments, loaded and saved whole."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.money import Money
from services.checkout.adapters.tables import order_lines, order_shipments, orders
from services.checkout.domain.order import (
    FailureReason,
    FraudAssessment,
    FraudDecision,
    Order,
    OrderLine,
    OrderStatus,
    Shipment,
    ShippingAddress,
)
from services.checkout.service_layer.ports import OrderRepositoryPort


class OrderRepository(OrderRepositoryPort):
    """Reads and writes orders inside the unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, order: Order) -> bool:
        """Insert a new order; False (and nothing written) when its cart already has one."""
        inserted = await self.session.execute(
            pg_insert(orders)
            .values(
                order_id=order.order_id,
                customer_id=order.customer_id,
                cart_id=order.cart_id,
                status=order.status.value,
                currency=order.currency,
                subtotal=order.subtotal.amount_minor,
                shipping_address=asdict(order.shipping_address),
                payment_method=order.payment_method,
            )
            .on_conflict_do_nothing(index_elements=[orders.c.cart_id])
            .returning(orders.c.created_at, orders.c.updated_at)
        )
        stamps = inserted.one_or_none()
        if stamps is None:
            return False
        order.created_at, order.updated_at = stamps.created_at, stamps.updated_at
        await self.session.execute(
            insert(order_lines),
            [
                {
                    "order_id": order.order_id,
                    "line_no": number,
                    "sku": line.sku,
                    "merchant_id": line.merchant_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price.amount_minor,
                }
                for number, line in enumerate(order.lines)
            ],
        )
        return True

    async def order_id_for_cart(self, cart_id: uuid.UUID) -> uuid.UUID | None:
        """The order placed from a cart, if any."""
        found = await self.session.execute(
            select(orders.c.order_id).where(orders.c.cart_id == cart_id)
        )
        return found.scalar_one_or_none()

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """One order, optionally row-locked for a transition."""
        query = select(orders).where(orders.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).one_or_none()
        if row is None:
            return None
        return (await self._assemble([row]))[0]

    async def list_for_customer(
        self, customer_id: str, *, before: uuid.UUID | None, limit: int
    ) -> list[Order]:
        """A customer's orders, newest first, older than `before` when given."""
        query = select(orders).where(orders.c.customer_id == customer_id)
        if before is not None:
            query = query.where(orders.c.order_id < before)
        query = query.order_by(orders.c.order_id.desc()).limit(limit)
        return await self._assemble((await self.session.execute(query)).all())

    async def save(self, order: Order) -> None:
        """Write an order's changed state back (lines never change after placement)."""
        row = await self.session.execute(
            update(orders)
            .where(orders.c.order_id == order.order_id)
            .values(
                status=order.status.value,
                failure_reason=order.failure_reason.value if order.failure_reason else None,
                failure_detail=order.failure_detail,
                tax=order.tax.amount_minor if order.tax else None,
                fraud_decision=order.fraud.decision.value if order.fraud else None,
                fraud_score=order.fraud.score if order.fraud else None,
                fraud_reason=order.fraud.reason if order.fraud else None,
                reservation_id=order.reservation_id,
                payment_id=order.payment_id,
                cancel_requested=order.cancel_requested,
                updated_at=func.now(),
            )
            .returning(orders.c.updated_at)
        )
        order.updated_at = row.scalar_one()
        for shipment in order.shipments:
            await self.session.execute(
                pg_insert(order_shipments)
                .values(
                    shipment_id=shipment.shipment_id,
                    order_id=order.order_id,
                    merchant_id=shipment.merchant_id,
                    carrier=shipment.carrier,
                    tracking_number=shipment.tracking_number,
                    shipped_at=shipment.shipped_at,
                )
                .on_conflict_do_update(
                    index_elements=[order_shipments.c.shipment_id],
                    set_={
                        "carrier": shipment.carrier,
                        "tracking_number": shipment.tracking_number,
                        "shipped_at": shipment.shipped_at,
                    },
                )
            )

    async def mark_saga_started(self, order_id: uuid.UUID) -> None:
        """Note that the order's saga execution exists."""
        await self.session.execute(
            update(orders)
            .where(orders.c.order_id == order_id, orders.c.saga_started_at.is_(None))
            .values(saga_started_at=func.now())
        )

    async def without_saga(self, *, older_than: timedelta, limit: int) -> list[Order]:
        """PENDING orders whose saga start was never recorded, placed before now - older_than."""
        query = (
            select(orders)
            .where(
                orders.c.status == OrderStatus.PENDING.value,
                orders.c.saga_started_at.is_(None),
                orders.c.created_at < func.now() - older_than,
            )
            .order_by(orders.c.created_at)
            .limit(limit)
        )
        return await self._assemble((await self.session.execute(query)).all())

    async def pending_since(self, *, older_than: timedelta, limit: int) -> list[uuid.UUID]:
        """PENDING orders placed before now - older_than, oldest first."""
        query = (
            select(orders.c.order_id)
            .where(
                orders.c.status == OrderStatus.PENDING.value,
                orders.c.created_at < func.now() - older_than,
            )
            .order_by(orders.c.created_at)
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars())

    async def _assemble(self, rows: Sequence[Row[Any]]) -> list[Order]:
        ids = [row.order_id for row in rows]
        if not ids:
            return []
        lines: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for line in await self.session.execute(
            select(order_lines)
            .where(order_lines.c.order_id.in_(ids))
            .order_by(order_lines.c.order_id, order_lines.c.line_no)
        ):
            lines[line.order_id].append(line)
        shipments: dict[uuid.UUID, list[Shipment]] = defaultdict(list)
        for shipment in await self.session.execute(
            select(order_shipments)
            .where(order_shipments.c.order_id.in_(ids))
            .order_by(order_shipments.c.shipment_id)
        ):
            shipments[shipment.order_id].append(
                Shipment(
                    shipment_id=shipment.shipment_id,
                    merchant_id=shipment.merchant_id,
                    carrier=shipment.carrier,
                    tracking_number=shipment.tracking_number,
                    shipped_at=shipment.shipped_at,
                )
            )
        return [_order(row, lines[row.order_id], shipments[row.order_id]) for row in rows]


def _order(row: Row[Any], lines: list[Any], shipments: list[Shipment]) -> Order:
    fraud = (
        FraudAssessment(FraudDecision(row.fraud_decision), row.fraud_score, row.fraud_reason)
        if row.fraud_decision
        else None
    )
    return Order(
        order_id=row.order_id,
        customer_id=row.customer_id,
        cart_id=row.cart_id,
        lines=tuple(
            OrderLine(
                sku=line.sku,
                merchant_id=line.merchant_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=Money(line.unit_price, row.currency),
            )
            for line in lines
        ),
        shipping_address=ShippingAddress(**row.shipping_address),
        payment_method=row.payment_method,
        status=OrderStatus(row.status),
        failure_reason=FailureReason(row.failure_reason) if row.failure_reason else None,
        failure_detail=row.failure_detail,
        tax=Money(row.tax, row.currency) if row.tax is not None else None,
        fraud=fraud,
        reservation_id=row.reservation_id,
        payment_id=row.payment_id,
        cancel_requested=row.cancel_requested,
        shipments=tuple(shipments),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )

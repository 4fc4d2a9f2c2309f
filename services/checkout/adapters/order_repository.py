"""Orders in PostgreSQL: the aggregate with its lines and shipments, loaded and saved whole.

The order, its lines and its shipments are read in one statement (the lines and shipments as
arrays of rows beside the order's columns) and written in one: a read-modify-write step of the
saga costs two round trips whatever the number of lines or merchants. Each statement is built
once, at import; its values are bound at execution.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import RowMapping, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.money import Money
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

# The order's columns, its lines in line order and its shipments, as one row per order.
_ORDERS = """
SELECT o.*,
       ARRAY(SELECT ROW(l.sku, l.merchant_id, l.name, l.quantity, l.unit_price)
             FROM checkout.order_lines AS l
             WHERE l.order_id = o.order_id
             ORDER BY l.line_no) AS lines,
       ARRAY(SELECT ROW(s.shipment_id, s.merchant_id, s.carrier, s.tracking_number, s.shipped_at)
             FROM checkout.order_shipments AS s
             WHERE s.order_id = o.order_id
             ORDER BY s.shipment_id) AS shipments
FROM checkout.orders AS o
"""
_GET = text(_ORDERS + "WHERE o.order_id = :order_id")
_GET_FOR_UPDATE = text(_ORDERS + "WHERE o.order_id = :order_id FOR UPDATE OF o")
# A customer's orders newest first: by creation time, then id (order ids are derived from the
# request, so they carry no time). The page token is the last order's id; the next page starts
# below that order's (created_at, order_id), read in the same statement.
_NEWEST_FIRST = " ORDER BY o.created_at DESC, o.order_id DESC LIMIT :limit"
_FOR_CUSTOMER = text(_ORDERS + "WHERE o.customer_id = :customer_id" + _NEWEST_FIRST)
_FOR_CUSTOMER_BEFORE = text(
    _ORDERS
    + "WHERE o.customer_id = :customer_id"
    + " AND (o.created_at, o.order_id) < (SELECT b.created_at, b.order_id"
    + " FROM checkout.orders AS b WHERE b.order_id = :before)"
    + _NEWEST_FIRST
)
_WITHOUT_SAGA = text(
    _ORDERS
    + "WHERE o.status = 'PENDING' AND o.saga_started_at IS NULL"
    + " AND o.created_at < now() - CAST(:older_than AS interval)"
    + " ORDER BY o.created_at LIMIT :limit"
)
_PENDING_SINCE = text(
    """
    SELECT order_id FROM checkout.orders
    WHERE status = 'PENDING' AND created_at < now() - CAST(:older_than AS interval)
    ORDER BY created_at LIMIT :limit
    """
)
_ORDER_FOR_CART = text("SELECT order_id FROM checkout.orders WHERE cart_id = :cart_id")

# The order and its lines in one statement; nothing at all when the cart has an order already
# or the order is there already (its id names the request: the same purchase placed earlier).
# No conflict target, so both are "nothing", never a unique violation, even in a race.
_ADD = text(
    """
    WITH placed AS (
        INSERT INTO checkout.orders (order_id, customer_id, cart_id, status, currency, subtotal,
                                     shipping_address, payment_method)
        VALUES (:order_id, :customer_id, :cart_id, :status, :currency, :subtotal,
                :shipping_address, :payment_method)
        ON CONFLICT DO NOTHING
        RETURNING order_id, created_at, updated_at
    ), lines AS (
        INSERT INTO checkout.order_lines (order_id, line_no, sku, merchant_id, name, quantity,
                                          unit_price)
        SELECT placed.order_id, v.line_no, v.sku, v.merchant_id, v.name, v.quantity,
               v.unit_price
        FROM placed,
             unnest(CAST(:line_nos AS integer[]), CAST(:skus AS text[]),
                    CAST(:merchant_ids AS text[]), CAST(:names AS text[]),
                    CAST(:quantities AS integer[]), CAST(:unit_prices AS bigint[]))
                 AS v(line_no, sku, merchant_id, name, quantity, unit_price)
    )
    SELECT created_at, updated_at FROM placed
    """
).bindparams(bindparam("shipping_address", type_=JSONB))

# The order's changed state and every shipment (new ones inserted, known ones updated).
_SAVE = text(
    """
    WITH shipments AS (
        INSERT INTO checkout.order_shipments AS s (shipment_id, order_id, merchant_id, carrier,
                                                   tracking_number, shipped_at)
        SELECT v.shipment_id, CAST(:order_id AS uuid), v.merchant_id, v.carrier, v.tracking_number,
               v.shipped_at
        FROM unnest(CAST(:shipment_ids AS uuid[]), CAST(:merchant_ids AS text[]),
                    CAST(:carriers AS text[]), CAST(:tracking_numbers AS text[]),
                    CAST(:shipped_ats AS timestamptz[]))
                 AS v(shipment_id, merchant_id, carrier, tracking_number, shipped_at)
        ON CONFLICT (shipment_id) DO UPDATE
            SET carrier = excluded.carrier,
                tracking_number = excluded.tracking_number,
                shipped_at = excluded.shipped_at
    )
    UPDATE checkout.orders
    SET status = :status, failure_reason = :failure_reason, failure_detail = :failure_detail,
        tax = :tax, fraud_decision = :fraud_decision, fraud_score = :fraud_score,
        fraud_reason = :fraud_reason, reservation_id = :reservation_id,
        payment_id = :payment_id, cancel_requested = :cancel_requested, updated_at = now()
    WHERE order_id = :order_id
    RETURNING updated_at
    """
)
_MARK_SAGA_STARTED = text(
    "UPDATE checkout.orders SET saga_started_at = now()"
    " WHERE order_id = :order_id AND saga_started_at IS NULL"
)


class OrderRepository(OrderRepositoryPort):
    """Reads and writes orders inside the unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, order: Order) -> bool:
        """Insert a new order; False (and nothing written) when its cart already has one or the
        order is there already."""
        lines = order.lines
        inserted = await self.session.execute(
            _ADD,
            {
                "order_id": order.order_id,
                "customer_id": order.customer_id,
                "cart_id": order.cart_id,
                "status": order.status.value,
                "currency": order.currency,
                "subtotal": order.subtotal.amount_minor,
                "shipping_address": asdict(order.shipping_address),
                "payment_method": order.payment_method,
                "line_nos": list(range(len(lines))),
                "skus": [line.sku for line in lines],
                "merchant_ids": [line.merchant_id for line in lines],
                "names": [line.name for line in lines],
                "quantities": [line.quantity for line in lines],
                "unit_prices": [line.unit_price.amount_minor for line in lines],
            },
        )
        stamps = inserted.one_or_none()
        if stamps is None:
            return False
        order.created_at, order.updated_at = stamps.created_at, stamps.updated_at
        return True

    async def order_id_for_cart(self, cart_id: uuid.UUID) -> uuid.UUID | None:
        """The order placed from a cart, if any."""
        found = await self.session.execute(_ORDER_FOR_CART, {"cart_id": cart_id})
        order_id: uuid.UUID | None = found.scalar_one_or_none()
        return order_id

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """One order, optionally row-locked for a transition."""
        query = _GET_FOR_UPDATE if for_update else _GET
        row = (await self.session.execute(query, {"order_id": order_id})).mappings().one_or_none()
        return None if row is None else _order(row)

    async def list_for_customer(
        self, customer_id: str, *, before: uuid.UUID | None, limit: int
    ) -> list[Order]:
        """A customer's orders, newest first, placed before the order `before` when given."""
        if before is None:
            return await self._orders(_FOR_CUSTOMER, customer_id=customer_id, limit=limit)
        return await self._orders(
            _FOR_CUSTOMER_BEFORE, customer_id=customer_id, before=before, limit=limit
        )

    async def save(self, order: Order) -> None:
        """Write an order's changed state back (lines never change after placement)."""
        shipments = order.shipments
        row = await self.session.execute(
            _SAVE,
            {
                "order_id": order.order_id,
                "status": order.status.value,
                "failure_reason": order.failure_reason.value if order.failure_reason else None,
                "failure_detail": order.failure_detail,
                "tax": order.tax.amount_minor if order.tax else None,
                "fraud_decision": order.fraud.decision.value if order.fraud else None,
                "fraud_score": order.fraud.score if order.fraud else None,
                "fraud_reason": order.fraud.reason if order.fraud else None,
                "reservation_id": order.reservation_id,
                "payment_id": order.payment_id,
                "cancel_requested": order.cancel_requested,
                "shipment_ids": [shipment.shipment_id for shipment in shipments],
                "merchant_ids": [shipment.merchant_id for shipment in shipments],
                "carriers": [shipment.carrier for shipment in shipments],
                "tracking_numbers": [shipment.tracking_number for shipment in shipments],
                "shipped_ats": [shipment.shipped_at for shipment in shipments],
            },
        )
        order.updated_at = row.scalar_one()

    async def mark_saga_started(self, order_id: uuid.UUID) -> None:
        """Note that the order's saga execution exists."""
        await self.session.execute(_MARK_SAGA_STARTED, {"order_id": order_id})

    async def without_saga(self, *, older_than: timedelta, limit: int) -> list[Order]:
        """PENDING orders whose saga start was never recorded, placed before now - older_than."""
        return await self._orders(_WITHOUT_SAGA, older_than=older_than, limit=limit)

    async def pending_since(self, *, older_than: timedelta, limit: int) -> list[uuid.UUID]:
        """PENDING orders placed before now - older_than, oldest first."""
        found = await self.session.execute(
            _PENDING_SINCE, {"older_than": older_than, "limit": limit}
        )
        return list(found.scalars())

    async def _orders(self, query: Any, **values: Any) -> list[Order]:
        rows = (await self.session.execute(query, values)).mappings()
        return [_order(row) for row in rows]


def _order(row: RowMapping) -> Order:
    currency = row["currency"]
    fraud = (
        FraudAssessment(
            FraudDecision(row["fraud_decision"]), row["fraud_score"], row["fraud_reason"]
        )
        if row["fraud_decision"]
        else None
    )
    return Order(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        cart_id=row["cart_id"],
        lines=tuple(_lines(row["lines"], currency)),
        shipping_address=ShippingAddress(**row["shipping_address"]),
        payment_method=row["payment_method"],
        status=OrderStatus(row["status"]),
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
        failure_detail=row["failure_detail"],
        tax=Money(row["tax"], currency) if row["tax"] is not None else None,
        fraud=fraud,
        reservation_id=row["reservation_id"],
        payment_id=row["payment_id"],
        cancel_requested=row["cancel_requested"],
        shipments=tuple(_shipments(row["shipments"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _lines(records: Sequence[Sequence[Any]], currency: str) -> Iterable[OrderLine]:
    for sku, merchant_id, name, quantity, unit_price in records:
        yield OrderLine(
            sku=sku,
            merchant_id=merchant_id,
            name=name,
            quantity=quantity,
            unit_price=Money(unit_price, currency),
        )


def _shipments(records: Sequence[Sequence[Any]]) -> Iterable[Shipment]:
    for shipment_id, merchant_id, carrier, tracking_number, shipped_at in records:
        yield Shipment(
            shipment_id=shipment_id,
            merchant_id=merchant_id,
            carrier=carrier,
            tracking_number=tracking_number,
            shipped_at=shipped_at,
        )

"""Orders for the console: a search, and one order with its execution and its timeline (what
the order, its saga, its payment, its events, its reservation and its shipments recorded, in
time order)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ops import tables
from gateway.ops.database import iso, money, reading
from gateway.ops.executions import ExecutionView, load_execution, trace_id_of


def parse_uuid(text: str) -> uuid.UUID | None:
    """The UUID `text` spells, or None."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _order(row: Row[Any]) -> dict[str, Any]:
    return {
        "order_id": str(row.order_id),
        "customer_id": row.customer_id,
        "status": row.status,
        "failure_reason": row.failure_reason,
        "total": money(row.subtotal + (row.tax or 0), row.currency),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


async def list_orders(engine: AsyncEngine, *, q: str, limit: int) -> list[dict[str, Any]]:
    """Newest first: every order (q empty), the order or the customer's orders (q a UUID), or
    the orders of customer `q`."""
    orders = tables.orders
    query = sa.select(orders).order_by(orders.c.created_at.desc()).limit(limit)
    q = q.strip()
    if q:
        as_id = parse_uuid(q)
        match = orders.c.customer_id == q
        query = query.where(match if as_id is None else sa.or_(orders.c.order_id == as_id, match))
    async with reading(engine) as connection:
        rows = (await connection.execute(query)).all()
    return [_order(row) for row in rows]


async def order_detail(engine: AsyncEngine, order_id: uuid.UUID) -> dict[str, Any] | None:
    """The order, its lines, its execution, its trace id and its timeline; None if unknown."""
    async with reading(engine) as connection:
        row = (
            await connection.execute(
                sa.select(tables.orders).where(tables.orders.c.order_id == order_id)
            )
        ).one_or_none()
        if row is None:
            return None
        lines = (
            await connection.execute(
                sa.select(tables.order_lines)
                .where(tables.order_lines.c.order_id == order_id)
                .order_by(tables.order_lines.c.line_no)
            )
        ).all()
        execution = await load_execution(connection, str(order_id))
        timeline = await _timeline(connection, row, execution)
    document = _order(row)
    document["lines"] = [
        {
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price": money(line.unit_price, row.currency),
        }
        for line in lines
    ]
    return {
        "order": document,
        "execution": None if execution is None else execution.summary(),
        "trace_id": None if execution is None else trace_id_of(execution.row.traceparent),
        "timeline": timeline,
    }


def _entry(at: datetime | None, source: str, kind: str, detail: str) -> dict[str, Any]:
    return {"at": iso(at), "source": source, "kind": kind, "detail": detail}


async def _timeline(
    connection: AsyncConnection, order: Row[Any], execution: ExecutionView | None
) -> list[dict[str, Any]]:
    entries = _order_entries(order)
    if execution is not None:
        entries += [
            _entry(event.at, "saga", event.type, _saga_detail(event.state, event.payload))
            for event in execution.events
        ]
    entries += await _payment_entries(connection, order.order_id)
    entries += await _reservation_entries(connection, order.order_id)
    shipment_ids, shipment_entries = await _shipment_entries(connection, order.order_id)
    entries += shipment_entries
    aggregates = [str(order.order_id), *(str(shipment) for shipment in shipment_ids)]
    entries += await _event_entries(connection, aggregates)
    dated = [entry for entry in entries if entry["at"] is not None]
    return sorted(dated, key=lambda entry: entry["at"])


def _order_entries(order: Row[Any]) -> list[dict[str, Any]]:
    entries = [_entry(order.created_at, "order", "OrderCreated", f"customer {order.customer_id}")]
    if order.saga_started_at is not None:
        entries.append(_entry(order.saga_started_at, "order", "SagaStarted", "checkout saga"))
    if order.cancel_requested:
        entries.append(
            _entry(order.updated_at, "order", "CancellationRequested", "by the customer")
        )
    if order.updated_at != order.created_at or order.status != "PENDING":
        reason = ""
        if order.failure_reason:
            reason = f" ({order.failure_reason}: {order.failure_detail})"
        entries.append(_entry(order.updated_at, "order", "StatusNow", f"{order.status}{reason}"))
    return entries


def _saga_detail(state: str | None, payload: Any) -> str:
    parts = [state or "execution"]
    if isinstance(payload, dict):
        for key in ("error", "cause", "attempt", "next", "redrive_count", "actor"):
            if payload.get(key) is not None:
                parts.append(f"{key}={payload[key]}")
    return " ".join(str(part) for part in parts)


async def _payment_entries(
    connection: AsyncConnection, order_id: uuid.UUID
) -> list[dict[str, Any]]:
    payments, operations = tables.payments, tables.payment_operations
    payment = (
        await connection.execute(sa.select(payments).where(payments.c.order_id == order_id))
    ).one_or_none()
    if payment is None:
        return []
    amount = f"{payment.amount} {payment.currency}"
    entries = [
        _entry(payment.created_at, "payment", "PaymentCreated", amount),
        _entry(
            payment.updated_at,
            "payment",
            f"Payment{payment.status.title().replace('_', '')}",
            f"{payment.status}: authorized {payment.authorized}, captured {payment.captured},"
            f" refunded {payment.refunded} {payment.currency}"
            + (f"; {payment.failure_code}" if payment.failure_code else ""),
        ),
    ]
    rows = await connection.execute(
        sa.select(operations)
        .where(operations.c.payment_id == payment.payment_id)
        .order_by(operations.c.created_at)
    )
    for op in rows:
        failure = f" ({op.failure_code})" if op.failure_code else ""
        entries.append(
            _entry(
                op.created_at,
                "payment",
                op.kind,
                f"{op.kind} {op.amount} {payment.currency}: {op.state}{failure}",
            )
        )
    return entries


async def _reservation_entries(
    connection: AsyncConnection, order_id: uuid.UUID
) -> list[dict[str, Any]]:
    reservations = tables.reservations
    row = (
        await connection.execute(sa.select(reservations).where(reservations.c.order_id == order_id))
    ).one_or_none()
    if row is None:
        return []
    entries = [_entry(row.created_at, "reservation", "ReservationCreated", f"{row.status}")]
    if row.closed_at is not None:
        reason = f" ({row.release_reason})" if row.release_reason else ""
        entries.append(
            _entry(
                row.closed_at,
                "reservation",
                f"Reservation{row.status.title()}",
                f"{row.status}{reason}",
            )
        )
    return entries


async def _shipment_entries(
    connection: AsyncConnection, order_id: uuid.UUID
) -> tuple[list[uuid.UUID], list[dict[str, Any]]]:
    shipments = tables.shipments
    rows = (
        await connection.execute(sa.select(shipments).where(shipments.c.order_id == order_id))
    ).all()
    entries = []
    for row in rows:
        carrier = f" {row.carrier} {row.tracking_number}" if row.carrier else ""
        entries.append(
            _entry(
                row.created_at,
                "shipment",
                f"Shipment{row.status.title()}",
                f"merchant {row.merchant_id}{carrier}",
            )
        )
        if row.shipped_at is not None:
            entries.append(_entry(row.shipped_at, "shipment", "ShipmentShipped", f"{carrier}"))
    return [row.shipment_id for row in rows], entries


async def _event_entries(
    connection: AsyncConnection, aggregate_ids: Sequence[str]
) -> list[dict[str, Any]]:
    entries = []
    for schema, outbox in tables.outboxes.items():
        rows = await connection.execute(
            sa.select(outbox.c.event_type, outbox.c.occurred_at, outbox.c.published_at).where(
                outbox.c.aggregate_id.in_(aggregate_ids)
            )
        )
        for row in rows:
            published = (
                f"published {iso(row.published_at)}" if row.published_at else "not published yet"
            )
            detail = f"{schema}: {published}"
            entries.append(_entry(row.occurred_at, "event", row.event_type, detail))
    return entries

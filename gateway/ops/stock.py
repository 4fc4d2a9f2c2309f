"""Stock for the console: SKUs by prefix with units on hand, reserved and available, and the
reservations that hold (or held) their units, newest first."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ops import tables
from gateway.ops.database import iso, reading

RESERVATIONS_PER_SKU = 20


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


async def stock_items(engine: AsyncEngine, *, sku_prefix: str, limit: int) -> list[dict[str, Any]]:
    """The SKUs starting with `sku_prefix` (every SKU when empty), in SKU order."""
    items, lines, reservations = tables.stock_items, tables.reservation_lines, tables.reservations
    query = sa.select(items).order_by(items.c.sku).limit(limit)
    if sku_prefix:
        query = query.where(items.c.sku.like(_like_prefix(sku_prefix), escape="\\"))
    async with reading(engine) as connection:
        rows = (await connection.execute(query)).all()
        skus = [row.sku for row in rows]
        ranked = (
            sa.select(
                lines.c.sku,
                lines.c.quantity,
                reservations,
                sa.func.row_number()
                .over(partition_by=lines.c.sku, order_by=reservations.c.created_at.desc())
                .label("rank"),
            )
            .join(reservations, reservations.c.reservation_id == lines.c.reservation_id)
            .where(lines.c.sku.in_(skus))
            .subquery()
        )
        held = (
            await connection.execute(
                sa.select(ranked)
                .where(ranked.c.rank <= RESERVATIONS_PER_SKU)
                .order_by(ranked.c.sku, ranked.c.rank)
            )
        ).all()
    by_sku: dict[str, list[dict[str, Any]]] = {sku: [] for sku in skus}
    for line in held:
        by_sku[line.sku].append(
            {
                "reservation_id": str(line.reservation_id),
                "order_id": str(line.order_id),
                "quantity": line.quantity,
                "status": line.status,
                "expires_at": iso(line.expires_at),
            }
        )
    return [
        {
            "sku": row.sku,
            "on_hand": int(row.on_hand),
            "reserved": int(row.reserved),
            "available": int(row.on_hand - row.reserved),
            "reservations": by_sku[row.sku],
        }
        for row in rows
    ]

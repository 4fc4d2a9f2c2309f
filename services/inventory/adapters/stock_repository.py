"""Reads and writes of stock levels and ledger movements."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.inventory.adapters.tables import stock_items, stock_movements
from services.inventory.domain.reservation import ReservationLine
from services.inventory.domain.stock import Movement, StockLevel
from services.inventory.service_layer.ports import Holds, StockItems

_RECORD = stock_movements.insert()


class StockRepository(StockItems):
    """Stock rows of the inventory schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, sku: str, *, for_update: bool = False) -> StockLevel | None:
        """The SKU's stock level, locked for the transaction when for_update."""
        query = select(stock_items).where(stock_items.c.sku == sku)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().one_or_none()
        return StockLevel(**row) if row else None

    async def get_or_create_for_update(self, sku: str) -> StockLevel:
        """Lock the SKU's row, creating it with nothing on hand first if it is new."""
        await self.session.execute(
            insert(stock_items).values(sku=sku, on_hand=0).on_conflict_do_nothing()
        )
        level = await self.get(sku, for_update=True)
        assert level is not None  # inserted or already there, and rows are never deleted
        return level

    async def save(self, level: StockLevel) -> StockLevel:
        """Write the level's counts and return it as stored (with its update time)."""
        row = (
            (
                await self.session.execute(
                    stock_items.update()
                    .where(stock_items.c.sku == level.sku)
                    .values(
                        on_hand=level.on_hand,
                        reserved=level.reserved,
                        sold=level.sold,
                        updated_at=func.now(),
                    )
                    .returning(*stock_items.c)
                )
            )
            .mappings()
            .one()
        )
        return StockLevel(**row)

    async def record(self, *movements: Movement) -> None:
        """Append movements to the ledger."""
        if movements:
            await self.session.execute(
                _RECORD,
                [
                    {
                        "sku": m.sku,
                        "on_hand_delta": m.on_hand_delta,
                        "reserved_delta": m.reserved_delta,
                        "reason": m.reason,
                        "order_id": m.order_id,
                    }
                    for m in movements
                ],
            )


_LOCK_IN_SKU_ORDER = text(
    "SELECT sku FROM inventory.stock_items WHERE sku = ANY(CAST(:skus AS text[]))"
    " ORDER BY sku FOR UPDATE"
)
_HOLD = text(
    """
    UPDATE inventory.stock_items AS s
       SET reserved = s.reserved + v.quantity, updated_at = now()
      FROM unnest(CAST(:skus AS text[]), CAST(:quantities AS bigint[])) AS v(sku, quantity)
     WHERE s.sku = v.sku AND s.on_hand - s.reserved >= v.quantity
    RETURNING s.sku
    """
)
_MOVE = text(
    """
    UPDATE inventory.stock_items AS s
       SET on_hand = s.on_hand + :on_hand_sign * v.quantity,
           reserved = s.reserved - v.quantity,
           sold = s.sold + :sold_sign * v.quantity,
           updated_at = now()
      FROM unnest(CAST(:skus AS text[]), CAST(:quantities AS bigint[])) AS v(sku, quantity)
     WHERE s.sku = v.sku
    """
)

_RESTOCK = text(
    """
    UPDATE inventory.stock_items AS s
       SET on_hand = s.on_hand + v.quantity, sold = s.sold - v.quantity, updated_at = now()
      FROM unnest(CAST(:skus AS text[]), CAST(:quantities AS bigint[])) AS v(sku, quantity)
     WHERE s.sku = v.sku
    """
)


class StockHolds(Holds):
    """Moves of reserved units on stock rows, always locking SKUs in the same (sorted) order.

    Two multi-line reservations that share SKUs take their row locks in one global order, so
    neither can wait on the other in a cycle: no deadlock.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def hold(self, lines: Sequence[ReservationLine]) -> set[str]:
        """Reserve each line's units where available; return the SKUs that were held."""
        skus, quantities = _columns(lines)
        if len(lines) > 1:
            await self.session.execute(_LOCK_IN_SKU_ORDER, {"skus": skus})
        held = await self.session.execute(_HOLD, {"skus": skus, "quantities": quantities})
        return set(held.scalars().all())

    async def settle(self, lines: Sequence[ReservationLine]) -> None:
        """Reserved units are sold: they leave on hand and reserved, and count as sold."""
        await self._move(lines, on_hand_sign=-1, sold_sign=1)

    async def give_back(self, lines: Sequence[ReservationLine]) -> None:
        """Reserved units become available again."""
        await self._move(lines, on_hand_sign=0, sold_sign=0)

    async def restock(self, lines: Sequence[ReservationLine]) -> None:
        """Sold units of a cancelled order go back on hand and no longer count as sold."""
        if not lines:
            return
        skus, quantities = _columns(lines)
        if len(lines) > 1:
            await self.session.execute(_LOCK_IN_SKU_ORDER, {"skus": skus})
        await self.session.execute(_RESTOCK, {"skus": skus, "quantities": quantities})

    async def available(self, skus: Sequence[str]) -> dict[str, int]:
        """Available units of each known SKU (unknown SKUs are absent)."""
        rows = await self.session.execute(
            select(stock_items.c.sku, stock_items.c.on_hand - stock_items.c.reserved).where(
                stock_items.c.sku.in_(skus)
            )
        )
        return {sku: int(units) for sku, units in rows}

    async def _move(
        self, lines: Sequence[ReservationLine], *, on_hand_sign: int, sold_sign: int
    ) -> None:
        if not lines:
            return
        skus, quantities = _columns(lines)
        if len(lines) > 1:
            await self.session.execute(_LOCK_IN_SKU_ORDER, {"skus": skus})
        await self.session.execute(
            _MOVE,
            {
                "skus": skus,
                "quantities": quantities,
                "on_hand_sign": on_hand_sign,
                "sold_sign": sold_sign,
            },
        )


def _columns(lines: Sequence[ReservationLine]) -> tuple[list[str], list[int]]:
    ordered = sorted(lines)
    return [line.sku for line in ordered], [line.quantity for line in ordered]

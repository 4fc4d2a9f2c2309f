"""Reads and writes of stock levels and ledger movements."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.inventory.adapters.tables import stock_items, stock_movements
from services.inventory.domain.stock import Movement, StockLevel


class StockRepository:
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

    async def record(self, movement: Movement) -> None:
        """Append a movement to the ledger."""
        await self.session.execute(
            stock_movements.insert().values(
                sku=movement.sku,
                on_hand_delta=movement.on_hand_delta,
                reserved_delta=movement.reserved_delta,
                reason=movement.reason,
                order_id=movement.order_id,
            )
        )

"""Stock use cases: each takes its input and the service's dependencies."""

from __future__ import annotations

from dataclasses import dataclass

from marketplace_platform.errors import NotFound
from services.inventory.domain import stock
from services.inventory.domain.stock import StockLevel
from services.inventory.service_layer.deps import InventoryDeps


@dataclass(frozen=True, kw_only=True)
class SetStock:
    """Admin: the counted units on hand of a SKU."""

    sku: str
    on_hand: int


async def set_stock(command: SetStock, deps: InventoryDeps) -> StockLevel:
    """Set a SKU's on-hand units, recording the change in the ledger."""
    async with deps.unit_of_work() as uow:
        current = await uow.stock.get_or_create_for_update(command.sku)
        level, movement = stock.set_on_hand(current, command.on_hand)
        saved = await uow.stock.save(level)
        if movement is not None:
            await uow.stock.record(movement)
    return saved


async def get_stock(sku: str, deps: InventoryDeps) -> StockLevel:
    """A SKU's stock level; NotFound for a SKU never stocked."""
    async with deps.unit_of_work() as uow:
        level = await uow.stock.get(sku)
    if level is None:
        raise NotFound(f"no stock record for sku {sku}", metadata={"sku": sku})
    return level

"""Inventory's use cases: each takes a command and a unit of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from marketplace_platform.db import UnitOfWork
from marketplace_platform.errors import NotFound
from services.inventory.adapters.stock_repository import StockRepository
from services.inventory.domain import stock
from services.inventory.domain.stock import StockLevel

UnitOfWorkFactory = Callable[[], UnitOfWork]


@dataclass(frozen=True, kw_only=True)
class SetStock:
    """Admin: the counted units on hand of a SKU."""

    sku: str
    on_hand: int


async def set_stock(command: SetStock, uow: UnitOfWork) -> StockLevel:
    """Set a SKU's on-hand units, recording the change in the ledger."""
    async with uow:
        stock_items = StockRepository(uow.session)
        current = await stock_items.get_or_create_for_update(command.sku)
        level, movement = stock.set_on_hand(current, command.on_hand)
        saved = await stock_items.save(level)
        if movement is not None:
            await stock_items.record(movement)
    return saved


async def get_stock(sku: str, uow: UnitOfWork) -> StockLevel:
    """A SKU's stock level; NotFound for a SKU never stocked."""
    async with uow:
        level = await StockRepository(uow.session).get(sku)
    if level is None:
        raise NotFound(f"no stock record for sku {sku}", metadata={"sku": sku})
    return level

"""What every inventory use case takes: a fresh unit of work per transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.inventory.service_layer.ports import AbstractInventoryUnitOfWork

UnitOfWorkFactory = Callable[[], AbstractInventoryUnitOfWork]


@dataclass(frozen=True)
class InventoryDeps:
    """What inventory's use cases depend on: a fresh unit of work per transaction.

    Every use case takes its command (or arguments) and these:
    `async def use_case(command, deps: InventoryDeps) -> result`.
    """

    unit_of_work: UnitOfWorkFactory

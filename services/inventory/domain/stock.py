"""Stock of one SKU and the movements that change it. Pure: no I/O, no framework."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from marketplace_platform.errors import FailedPrecondition


@dataclass(frozen=True)
class StockLevel:
    """On-hand, reserved and sold units of a SKU; available is what can still be reserved."""

    sku: str
    on_hand: int
    reserved: int = 0
    sold: int = 0
    updated_at: datetime | None = None

    @property
    def available(self) -> int:
        """Units that a new reservation may take."""
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class Movement:
    """One ledger row: how a change moved on-hand and reserved units, and why."""

    sku: str
    on_hand_delta: int
    reserved_delta: int
    reason: str
    order_id: uuid.UUID | None = None


def set_on_hand(level: StockLevel, on_hand: int) -> tuple[StockLevel, Movement | None]:
    """Set the counted units on hand; refused below what is already reserved."""
    if on_hand < level.reserved:
        raise FailedPrecondition(
            f"cannot set {level.sku} on hand to {on_hand}: {level.reserved} units are reserved",
            metadata={"sku": level.sku, "reserved": str(level.reserved)},
        )
    delta = on_hand - level.on_hand
    movement = Movement(level.sku, delta, 0, "stock_set") if delta else None
    return replace(level, on_hand=on_hand), movement

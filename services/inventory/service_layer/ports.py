"""What inventory's use cases need from the outside, as small interfaces.

`AbstractInventoryUnitOfWork` is one transaction; it exposes one repository of each kind bound
to it (`uow.stock`, `uow.holds`, `uow.reservations`, `uow.audit`), publishes events into it and
tells its time. `adapters.unit_of_work.InventoryUnitOfWork` and the PostgreSQL repositories
implement them; the service layer's unit tests use in-memory fakes of them.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from marketplace_platform.db import AbstractUnitOfWork
from services.inventory.domain.audit import AuditedSku
from services.inventory.domain.reservation import (
    ReleaseReason,
    Reservation,
    ReservationLine,
    ReservationStatus,
)
from services.inventory.domain.stock import Movement, StockLevel


class StockItems(abc.ABC):
    """Stock levels of SKUs and the ledger of the movements that changed them."""

    @abc.abstractmethod
    async def get(self, sku: str, *, for_update: bool = False) -> StockLevel | None:
        """The SKU's stock level, locked for the transaction when for_update."""

    @abc.abstractmethod
    async def get_or_create_for_update(self, sku: str) -> StockLevel:
        """Lock the SKU's row, creating it with nothing on hand first if it is new."""

    @abc.abstractmethod
    async def save(self, level: StockLevel) -> StockLevel:
        """Write the level's counts and return it as stored (with its update time)."""

    @abc.abstractmethod
    async def record(self, *movements: Movement) -> None:
        """Append movements to the ledger."""


class Holds(abc.ABC):
    """Moves of reserved units on stock levels, locking SKUs in one global (sorted) order."""

    @abc.abstractmethod
    async def hold(self, lines: Sequence[ReservationLine]) -> set[str]:
        """Reserve each line's units where available; return the SKUs that were held."""

    @abc.abstractmethod
    async def settle(self, lines: Sequence[ReservationLine]) -> None:
        """Reserved units are sold: they leave on hand and reserved, and count as sold."""

    @abc.abstractmethod
    async def give_back(self, lines: Sequence[ReservationLine]) -> None:
        """Reserved units become available again."""

    @abc.abstractmethod
    async def restock(self, lines: Sequence[ReservationLine]) -> None:
        """Sold units of a cancelled order go back on hand and no longer count as sold."""

    @abc.abstractmethod
    async def available(self, skus: Sequence[str]) -> dict[str, int]:
        """Available units of each known SKU (unknown SKUs are absent)."""


class Reservations(abc.ABC):
    """Reservations with their lines, one per order."""

    @abc.abstractmethod
    async def create(
        self,
        *,
        order_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        fingerprint: str,
        ttl: timedelta,
        status: ReservationStatus = ReservationStatus.ACTIVE,
        release_reason: ReleaseReason | None = None,
    ) -> Reservation | None:
        """Insert the order's reservation; None when the order already has one."""

    @abc.abstractmethod
    async def by_order(
        self, order_id: uuid.UUID, *, for_update: bool = False
    ) -> Reservation | None:
        """The order's reservation with its lines (row-locked when for_update)."""

    @abc.abstractmethod
    async def by_id(self, reservation_id: uuid.UUID) -> Reservation | None:
        """A reservation with its lines."""

    @abc.abstractmethod
    async def close(
        self,
        reservation: Reservation,
        status: ReservationStatus,
        release_reason: ReleaseReason | None = None,
    ) -> Reservation:
        """Mark an active reservation committed, released or expired."""

    @abc.abstractmethod
    async def expire_due(self, *, as_of: datetime | None, limit: int) -> list[Reservation]:
        """Mark up to `limit` active reservations past their expiry (as of now, or `as_of`)
        EXPIRED, skipping any another transaction holds; return them with their lines."""


class StockAuditor(abc.ABC):
    """Every SKU's recorded counts recomputed from the ledger and the active reservations."""

    @abc.abstractmethod
    async def recompute(self, skus: Sequence[str] = ()) -> list[AuditedSku]:
        """Recompute the given SKUs (all when empty), in SKU order."""


class AbstractInventoryUnitOfWork(AbstractUnitOfWork, Protocol):
    """One inventory transaction: entering begins it, a clean exit commits it, an error rolls it
    back; the repositories are usable, and events can be published, while it is open."""

    @property
    def stock(self) -> StockItems:
        """Stock levels and the ledger."""
        ...

    @property
    def holds(self) -> Holds:
        """Moves of reserved units."""
        ...

    @property
    def reservations(self) -> Reservations:
        """Reservations with their lines."""
        ...

    @property
    def audit(self) -> StockAuditor:
        """Counts recomputed from the ledger."""
        ...

    async def now(self) -> datetime:
        """The transaction's time, by the database's clock: the clock reservations expire by."""
        ...

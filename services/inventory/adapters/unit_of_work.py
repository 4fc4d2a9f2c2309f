"""Inventory's unit of work on PostgreSQL: one transaction and its repositories."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import TransactionClock, UnitOfWork
from services.inventory.adapters.audit import LedgerAudit
from services.inventory.adapters.reservation_repository import ReservationRepository
from services.inventory.adapters.stock_repository import StockHolds, StockRepository
from services.inventory.service_layer.ports import Holds, Reservations, StockAuditor, StockItems


class InventoryUnitOfWork(UnitOfWork):
    """One inventory transaction, exposing its repositories bound to the transaction.

    `stock` reads and writes stock levels and the ledger, `holds` moves reserved units,
    `reservations` keeps reservations, `audit` recomputes counts from the ledger. It implements
    `service_layer.ports.AbstractInventoryUnitOfWork`.
    """

    stock: StockItems
    holds: Holds
    reservations: Reservations
    audit: StockAuditor

    def _bind(self, session: AsyncSession) -> None:
        """Attach inventory's repositories to this transaction's session."""
        self.stock = StockRepository(session)
        self.holds = StockHolds(session)
        self._clock = TransactionClock(session)
        self.reservations = ReservationRepository(session, clock=self._clock)
        self.audit = LedgerAudit(session)

    async def now(self) -> datetime:
        """The database's time of this transaction: the clock reservations expire by (read
        already when this transaction read a reservation)."""
        return await self._clock.now()

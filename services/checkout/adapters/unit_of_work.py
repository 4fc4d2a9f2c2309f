"""Checkout's unit of work: one transaction, with the order and idempotency repositories bound
to it, so use cases reach their tables only as `uow.orders` and `uow.keys`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import UnitOfWork
from services.checkout.adapters.idempotency_repository import IdempotencyRepository
from services.checkout.adapters.order_repository import OrderRepository
from services.checkout.service_layer.ports import IdempotencyRepositoryPort, OrderRepositoryPort


class CheckoutUnitOfWork(UnitOfWork):
    """A checkout transaction: its orders, its idempotency keys and its outbox, together (the
    SQL implementation of AbstractCheckoutUnitOfWork)."""

    orders: OrderRepositoryPort
    keys: IdempotencyRepositoryPort

    def _bind(self, session: AsyncSession) -> None:
        """Bind the order and idempotency repositories to this transaction's session."""
        self.orders = OrderRepository(session)
        self.keys = IdempotencyRepository(session)

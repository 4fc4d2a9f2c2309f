"""The cart service's unit of work on PostgreSQL: one transaction and its repositories
(`service_layer.ports.AbstractCartUnitOfWork` and the repository ports it exposes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import UnitOfWork
from services.cart.adapters.cart_repository import CartRepository
from services.cart.adapters.catalog_repository import CatalogRepository
from services.cart.adapters.idempotency_repository import IdempotencyRepository
from services.cart.adapters.invalidation_repository import InvalidationRepository


class CartUnitOfWork(UnitOfWork):
    """A transaction with the cart schema's repositories bound to its session."""

    carts: CartRepository
    catalog: CatalogRepository
    keys: IdempotencyRepository
    invalidations: InvalidationRepository

    def _bind(self, session: AsyncSession) -> None:
        """Attach the carts, catalog, idempotency keys and owed invalidations to the session."""
        self.carts = CartRepository(session)
        self.catalog = CatalogRepository(session)
        self.keys = IdempotencyRepository(session)
        self.invalidations = InvalidationRepository(session)

    async def now(self) -> datetime:
        """The transaction's time, by the database's clock (`now()` is fixed per transaction)."""
        moment: datetime = (await self.session.execute(select(func.now()))).scalar_one()
        return moment

"""The cart service's unit of work on PostgreSQL: one transaction and its repositories
(`service_layer.ports.AbstractCartUnitOfWork` and the repository ports it exposes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import TransactionClock, UnitOfWork
from services.cart.adapters.cart_repository import CartRepository
from services.cart.adapters.catalog_repository import CatalogRepository
from services.cart.adapters.idempotency_repository import IdempotencyRepository
from services.cart.adapters.invalidation_repository import InvalidationRepository
from services.cart.domain.catalog import Product


class CartUnitOfWork(UnitOfWork):
    """A transaction with the cart schema's repositories bound to its session."""

    carts: CartRepository
    catalog: CatalogRepository
    keys: IdempotencyRepository
    invalidations: InvalidationRepository

    def _bind(self, session: AsyncSession) -> None:
        """Attach the carts, catalog, idempotency keys and owed invalidations to the session."""
        self._clock = TransactionClock(session)
        # The products this transaction has read, shared by the cart and catalog repositories:
        # a cart is read with its lines' products, and pricing it asks the catalog for them.
        seen_products: dict[str, Product | None] = {}
        self.carts = CartRepository(session, clock=self._clock, seen_products=seen_products)
        self.catalog = CatalogRepository(session, seen_products=seen_products)
        self.keys = IdempotencyRepository(session)
        self.invalidations = InvalidationRepository(session)

    async def now(self) -> datetime:
        """The transaction's time, by the database's clock (`now()` is fixed per transaction;
        a cart read in this transaction has read it already)."""
        return await self._clock.now()

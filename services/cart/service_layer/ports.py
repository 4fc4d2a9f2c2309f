"""What the cart use cases need from the outside, as interfaces: the repositories, the unit of
work they are bound to, and the cart cache.

`adapters.unit_of_work.CartUnitOfWork` implements the unit of work and its repositories on
PostgreSQL; `adapters.cart_cache` implements the cache on Redis (`RedisCartCache`) and as
nothing at all (`DisabledCartCache`); unit tests implement them in memory. Use cases reach every
repository through the unit of work (`uow.carts`, `uow.catalog`, `uow.keys`,
`uow.invalidations`) and never build one.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from marketplace_platform.db import AbstractUnitOfWork
from services.cart.domain.cart import Cart
from services.cart.domain.catalog import Product
from services.cart.domain.idempotency import KeyedRequest, StoredRequest

Pending = tuple[uuid.UUID, int]
"""A cart and the version whose cache entry must be tombstoned."""


class CartStore(Protocol):
    """Carts and their lines, within the unit of work's transaction."""

    async def create(self, *, cart_id: uuid.UUID, customer_id: str) -> Cart:
        """Store an empty OPEN cart at version 1 and return it as stored."""
        ...

    async def get(self, cart_id: uuid.UUID, *, for_update: bool = False) -> Cart | None:
        """The cart with its lines in the order they were added (row-locked when for_update)."""
        ...

    async def save(self, before: Cart, after: Cart) -> Cart:
        """Write the changes from `before` (as loaded under lock) to `after`; return it stored."""
        ...


class ProductCatalog(Protocol):
    """Catalog products, within the unit of work's transaction."""

    async def upsert(self, product: Product) -> Product:
        """Create the product or replace it; return it as stored."""
        ...

    async def get(self, sku: str) -> Product | None:
        """One product, or None."""
        ...

    async def many(self, skus: Collection[str]) -> dict[str, Product]:
        """The products of the SKUs that exist, by SKU."""
        ...


class IdempotencyKeys(Protocol):
    """Idempotency keys and the responses their first requests got."""

    async def claim(self, request: KeyedRequest) -> StoredRequest | None:
        """Claim the key for this request (None), or return what its first use stored."""
        ...

    async def complete(self, request: KeyedRequest, response: str) -> None:
        """Store the response a replay of the claimed key returns."""
        ...


class OwedInvalidations(Protocol):
    """Cache invalidations owed to Redis, remembered until Redis has them."""

    async def owe(self, cart_id: uuid.UUID, version: int) -> None:
        """Record that the cache must learn the cart is now at `version`."""
        ...

    async def pending(self, *, limit: int) -> list[Pending]:
        """The oldest invalidations still owed."""
        ...

    async def settle(self, settled: Sequence[Pending]) -> None:
        """Forget invalidations Redis now has; a newer one owed meanwhile stays."""
        ...


class CacheState(StrEnum):
    """Whether reads may use the cache."""

    DOWN = "DOWN"  # a call failed: serve from PostgreSQL, remember invalidations there
    RECOVERING = "RECOVERING"  # owed invalidations are being applied; writers tombstone again
    TRUSTED = "TRUSTED"  # reads and fills use the cache


class CartCache(Protocol):
    """Hot carts, cache-aside, never trusted blindly.

    A cache starts DOWN; any failure puts it back DOWN. `begin_recovery` moves it to RECOVERING
    (writers tombstone again) and `restored`, once every owed invalidation is applied, to
    TRUSTED: only then do reads and fills use it. A failure of read, fill, invalidate or ping
    puts the cache DOWN and is never raised: callers are served from PostgreSQL.
    """

    @property
    def trusted(self) -> bool:
        """Whether reads may be answered from the cache."""
        ...

    async def read(self, cart_id: uuid.UUID) -> Cart | None:
        """The cached cart, or None (miss, tombstone, not trusted, or the cache failing)."""
        ...

    async def fill(self, cart: Cart) -> None:
        """Cache a cart just read from PostgreSQL, unless a newer version is known."""
        ...

    async def invalidate(self, cart_id: uuid.UUID, version: int) -> bool:
        """Tombstone the cart at its new version; False when the cache did not take it."""
        ...

    async def ping(self) -> bool:
        """Whether the cache answers."""
        ...

    def begin_recovery(self) -> None:
        """DOWN -> RECOVERING: from now on writers tombstone again."""
        ...

    async def restored(self) -> None:
        """RECOVERING -> TRUSTED, once every owed invalidation is applied."""
        ...

    async def close(self) -> None:
        """Release the cache's connections."""
        ...


class AbstractCartUnitOfWork(AbstractUnitOfWork, Protocol):
    """One transaction of the cart service: entering begins it, a clean exit commits it, an
    error rolls it back; the repositories are usable while it is open."""

    @property
    def carts(self) -> CartStore:
        """The carts."""
        ...

    @property
    def catalog(self) -> ProductCatalog:
        """The catalog."""
        ...

    @property
    def keys(self) -> IdempotencyKeys:
        """The idempotency keys."""
        ...

    @property
    def invalidations(self) -> OwedInvalidations:
        """The cache invalidations owed."""
        ...

    async def now(self) -> datetime:
        """The transaction's time, by the database's clock."""
        ...

"""Cache invalidations owed to Redis, remembered in PostgreSQL until Redis has them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart.adapters.tables import cache_invalidations
from services.cart.service_layer.ports import Pending

# Built once at import: a newer version owed replaces an older one, never the reverse.
_OWED = insert(cache_invalidations).values(
    cart_id=bindparam("cart_id"), version=bindparam("version")
)
_OWE = _OWED.on_conflict_do_update(
    index_elements=[cache_invalidations.c.cart_id],
    set_={
        "version": func.greatest(cache_invalidations.c.version, _OWED.excluded.version),
        "recorded_at": func.now(),
    },
)


class InvalidationRepository:
    """Pending invalidations of the cart schema, within the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def owe(self, cart_id: uuid.UUID, version: int) -> None:
        """Record that the cache must learn the cart is now at `version`."""
        await self.session.execute(_OWE, {"cart_id": cart_id, "version": version})

    async def pending(self, *, limit: int) -> list[Pending]:
        """The oldest invalidations still owed."""
        rows = await self.session.execute(
            select(cache_invalidations.c.cart_id, cache_invalidations.c.version)
            .order_by(cache_invalidations.c.recorded_at)
            .limit(limit)
        )
        return [(row.cart_id, row.version) for row in rows]

    async def settle(self, settled: Sequence[Pending]) -> None:
        """Forget invalidations Redis now has; a newer one owed meanwhile stays."""
        if not settled:
            return
        await self.session.execute(
            cache_invalidations.delete().where(
                or_(
                    *(
                        and_(
                            cache_invalidations.c.cart_id == cart_id,
                            cache_invalidations.c.version <= version,
                        )
                        for cart_id, version in settled
                    )
                )
            )
        )

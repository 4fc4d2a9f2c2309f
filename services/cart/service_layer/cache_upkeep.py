"""Keeping the cart cache honest: invalidations owed to Redis are applied before it is trusted.

Every write owes its invalidation in PostgreSQL (same transaction as the change) and settles it
once Redis has the tombstone. A write made while Redis was unreachable leaves its debt behind;
`settle_owed_invalidations` pays every debt, then lets the cache be trusted again. It runs at
start (a previous process may have died owing some), every `interval` while the cache is DOWN
(to come back as soon as Redis does), and periodically while TRUSTED, to pay debts another
instance left when only it could not reach Redis.
"""

from __future__ import annotations

import logging

from marketplace_platform.periodic import BackgroundLoop, every
from services.cart.service_layer.deps import CartDeps

log = logging.getLogger(__name__)


async def settle_owed_invalidations(deps: CartDeps, *, batch: int = 500) -> bool:
    """Tombstone every cart whose invalidation is owed, then trust the cache; False if Redis
    failed on the way (the cache stays DOWN and the debts stay in PostgreSQL)."""
    # Writers that commit from here on tombstone themselves, so a debt recorded after the
    # scan below is paid by its own writer: nothing slips between the scan and `restored`.
    cache = deps.cache
    cache.begin_recovery()
    if not await cache.ping():
        return False
    while True:
        async with deps.unit_of_work() as uow:
            owed = await uow.invalidations.pending(limit=batch)
        for cart_id, version in owed:
            if not await cache.invalidate(cart_id, version):
                return False
        if owed:
            async with deps.unit_of_work() as uow:
                await uow.invalidations.settle(owed)
        if len(owed) < batch:
            break
    await cache.restored()
    return True


def keep_cache_honest(
    deps: CartDeps, *, down_interval: float, trusted_interval: float
) -> BackgroundLoop:
    """A loop settling owed invalidations, quickly while the cache is DOWN, slowly while not
    (a failure, e.g. PostgreSQL unavailable for a moment, leaves the cache as it is)."""
    return every(
        lambda: trusted_interval if deps.cache.trusted else down_interval,
        "settling owed cart cache invalidations",
        lambda: settle_owed_invalidations(deps),
        first_at_once=True,
    )

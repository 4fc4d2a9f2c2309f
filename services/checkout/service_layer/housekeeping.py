"""Background duties that keep every order moving: the completer, the timeout sweep and the
idempotency key reaper."""

from __future__ import annotations

import logging
from datetime import timedelta

from marketplace_platform.errors import DomainError
from services.checkout.domain.order import FailureReason
from services.checkout.service_layer.deps import CheckoutDeps
from services.checkout.service_layer.placement import complete_placement
from services.checkout.service_layer.steps import fail_order

log = logging.getLogger(__name__)


async def complete_stranded(*, older_than: timedelta, limit: int = 100, deps: CheckoutDeps) -> int:
    """Freeze the cart and start the saga of PENDING orders whose start was lost; how many."""
    async with deps.unit_of_work() as uow:
        stranded = await uow.orders.without_saga(older_than=older_than, limit=limit)
    started = 0
    for order in stranded:
        started += await complete_placement(order, deps=deps)
    if stranded:
        log.info("completer started %d of %d stranded sagas", started, len(stranded))
    return started


async def fail_overdue(*, older_than: timedelta, limit: int = 100, deps: CheckoutDeps) -> int:
    """Fail (TIMEOUT) PENDING orders older than the saga could possibly run; how many."""
    async with deps.unit_of_work() as uow:
        overdue = await uow.orders.pending_since(older_than=older_than, limit=limit)
    failed = 0
    for order_id in overdue:
        try:
            await fail_order(
                order_id,
                reason=FailureReason.TIMEOUT,
                detail="the saga did not finish within its deadline",
                deps=deps,
            )
            failed += 1
        except DomainError as error:  # it moved on meanwhile (confirmed); leave it
            log.info("order %s not timed out: %s", order_id, error.message)
    if failed:
        log.warning("failed %d orders whose saga deadline passed", failed)
    return failed


async def reap_idempotency_keys(
    *, retention: timedelta, batch: int = 1000, deps: CheckoutDeps
) -> int:
    """Delete idempotency records older than the retention, a batch per transaction; how many."""
    total = 0
    while True:
        async with deps.unit_of_work() as uow:
            reaped = await uow.keys.reap(older_than=retention, limit=batch)
        total += reaped
        if reaped < batch:
            return total

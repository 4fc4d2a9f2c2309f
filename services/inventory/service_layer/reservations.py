"""Reservation use cases: reserve all lines or none, commit, release, sweep, audit."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from marketplace_platform.errors import FieldViolation, InvalidArgument, NotFound
from marketplace_platform.metrics import RESERVATIONS_EXPIRED
from services.inventory.domain import reservation as rules
from services.inventory.domain.audit import AuditedSku
from services.inventory.domain.reservation import (
    ReleaseReason,
    Reservation,
    ReservationLine,
    ReservationStatus,
)
from services.inventory.service_layer import events
from services.inventory.service_layer.deps import InventoryDeps
from services.inventory.service_layer.ports import AbstractInventoryUnitOfWork, Holds

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReserveStock:
    """Hold every line's units for an order until committed, released or expired."""

    order_id: uuid.UUID
    lines: tuple[ReservationLine, ...]
    ttl: timedelta


@dataclass(frozen=True, kw_only=True)
class ReleaseReservation:
    """Give an order's reserved units back."""

    order_id: uuid.UUID
    reason: ReleaseReason


@dataclass(frozen=True, kw_only=True)
class FindReservation:
    """Look a reservation up by its order or by its own id (exactly one of them)."""

    order_id: uuid.UUID | None = None
    reservation_id: uuid.UUID | None = None


async def reserve_stock(command: ReserveStock, deps: InventoryDeps) -> Reservation:
    """Reserve all lines or none; the same request for the same order returns the same answer."""
    lines = rules.canonical_lines(list(command.lines))
    fingerprint = rules.fingerprint(lines)
    async with deps.unit_of_work() as uow:
        created = await uow.reservations.create(
            order_id=command.order_id, lines=lines, fingerprint=fingerprint, ttl=command.ttl
        )
        if created is None:
            existing = await uow.reservations.by_order(command.order_id)
            assert existing is not None  # the insert conflicted on it
            return rules.replay(existing, fingerprint)
        # The row locks come last, so they are held only for the update and the commit.
        await uow.stock.record(*rules.reserve_movements(command.order_id, lines))
        await uow.publish(
            events.reserved(created),
            aggregate_type=events.AGGREGATE,
            aggregate_id=str(command.order_id),
        )
        held = await uow.holds.hold(lines)
        if len(held) < len(lines):
            await _refuse_shortfall(uow.holds, command.lines, command.order_id)
    return created


async def _refuse_shortfall(
    holds: Holds, lines: tuple[ReservationLine, ...], order_id: uuid.UUID
) -> None:
    """Say why a hold failed: unknown SKUs (indexed as the request listed them), or too few."""
    available = await holds.available([line.sku for line in lines])
    unknown = [
        FieldViolation(f"lines[{index}].sku", f"unknown sku {line.sku}", "sku.known")
        for index, line in enumerate(lines)
        if line.sku not in available
    ]
    if unknown:
        raise InvalidArgument("reservation names unknown skus", tuple(unknown))
    short = {line.sku: available[line.sku] for line in lines if available[line.sku] < line.quantity}
    raise rules.OutOfStock(
        f"not enough stock for order {order_id}: "
        + ", ".join(f"{sku} has {units} available" for sku, units in short.items()),
        metadata={"skus": ",".join(short)},
    )


async def commit_reservation(order_id: uuid.UUID, deps: InventoryDeps) -> Reservation:
    """The order's reserved units are sold. Repeating it is harmless; after expiry it is refused."""
    async with deps.unit_of_work() as uow:
        existing = await uow.reservations.by_order(order_id, for_update=True)
        if existing is None:
            raise NotFound(
                f"no reservation for order {order_id}", metadata={"order_id": str(order_id)}
            )
        rules.check_commit(existing, await uow.now())
        if existing.status is ReservationStatus.COMMITTED:
            return existing
        committed = await uow.reservations.close(existing, ReservationStatus.COMMITTED)
        await uow.stock.record(*rules.commit_movements(committed))
        await uow.publish(
            events.committed(committed),
            aggregate_type=events.AGGREGATE,
            aggregate_id=str(order_id),
        )
        await uow.holds.settle(committed.lines)
    return committed


async def release_reservation(command: ReleaseReservation, deps: InventoryDeps) -> Reservation:
    """Give the order's units back: a hold is released, sold units are returned to stock, once.

    Repeating it is harmless. Releasing an order that has no reservation leaves a released
    mark, so a reservation request that arrives after its caller gave up (and compensated) is
    refused instead of holding stock.
    """
    async with deps.unit_of_work() as uow:
        existing = await uow.reservations.by_order(command.order_id, for_update=True)
        if existing is None:
            tombstone = await uow.reservations.create(
                order_id=command.order_id,
                lines=(),
                fingerprint=rules.TOMBSTONE_FINGERPRINT,
                ttl=timedelta(0),
                status=ReservationStatus.RELEASED,
                release_reason=command.reason,
            )
            if tombstone is None:  # a reservation appeared meanwhile; the caller retries
                raise rules.ReservationMismatch(f"order {command.order_id} changed; retry")
            return tombstone
        after = rules.released_as(existing)
        if after is None:
            return existing
        closed = await uow.reservations.close(existing, after, command.reason)
        if after is ReservationStatus.RETURNED:
            await uow.stock.record(*rules.return_movements(closed))
            await _publish_release(uow, closed)
            await uow.holds.restock(closed.lines)
            log.info("returned the sold units of cancelled order %s", command.order_id)
        else:
            await _record_release(uow, closed, "released")
            await uow.holds.give_back(closed.lines)
    return closed


async def expire_reservations(
    deps: InventoryDeps, *, as_of: datetime | None = None, limit: int = 500
) -> list[Reservation]:
    """Release a batch of reservations past their expiry (as of now, or `as_of`)."""
    async with deps.unit_of_work() as uow:
        expired = await uow.reservations.expire_due(as_of=as_of, limit=limit)
        for reservation in expired:
            await _record_release(uow, reservation, "expired")
        # One move over the batch's summed lines keeps the SKU lock order global.
        await uow.holds.give_back(rules.merged_lines(expired))
    if expired:
        RESERVATIONS_EXPIRED.inc(len(expired))
        log.info("released %d expired reservations", len(expired))
    return expired


async def expire_all_due(deps: InventoryDeps, *, batch: int) -> int:
    """Release every reservation past its expiry, a batch per transaction; how many."""
    total = 0
    while True:
        expired = await expire_reservations(deps, limit=batch)
        total += len(expired)
        if len(expired) < batch:
            return total


async def _record_release(
    uow: AbstractInventoryUnitOfWork, reservation: Reservation, reason: str
) -> None:
    await uow.stock.record(*rules.release_movements(reservation, reason))
    await _publish_release(uow, reservation)


async def _publish_release(uow: AbstractInventoryUnitOfWork, reservation: Reservation) -> None:
    await uow.publish(
        events.released(reservation),
        aggregate_type=events.AGGREGATE,
        aggregate_id=str(reservation.order_id),
    )


async def get_reservation(query: FindReservation, deps: InventoryDeps) -> Reservation:
    """A reservation by order or by its own id."""
    async with deps.unit_of_work() as uow:
        if query.order_id is not None:
            found = await uow.reservations.by_order(query.order_id)
        else:
            assert query.reservation_id is not None
            found = await uow.reservations.by_id(query.reservation_id)
    if found is None:
        raise NotFound(f"no reservation for {query.order_id or query.reservation_id}")
    return found


async def audit_stock(skus: tuple[str, ...], deps: InventoryDeps) -> list[AuditedSku]:
    """Every (or the given) SKU recomputed from the ledger."""
    async with deps.unit_of_work() as uow:
        return await uow.audit.recompute(skus)

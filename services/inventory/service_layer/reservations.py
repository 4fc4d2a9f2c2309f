"""Reservation use cases: reserve all lines or none, commit, release, sweep, audit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from marketplace_platform.db import UnitOfWork
from marketplace_platform.errors import FieldViolation, InvalidArgument, NotFound
from services.inventory.adapters.audit import AuditedSku, audit_stock
from services.inventory.adapters.reservation_repository import ReservationRepository
from services.inventory.adapters.stock_repository import StockHolds, StockRepository
from services.inventory.domain import reservation as rules
from services.inventory.domain.reservation import (
    ReleaseReason,
    Reservation,
    ReservationLine,
    ReservationStatus,
)
from services.inventory.service_layer import events

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


async def reserve_stock(command: ReserveStock, uow: UnitOfWork) -> Reservation:
    """Reserve all lines or none; the same request for the same order returns the same answer."""
    lines = rules.canonical_lines(list(command.lines))
    fingerprint = rules.fingerprint(lines)
    async with uow:
        reservations = ReservationRepository(uow.session)
        created = await reservations.create(
            order_id=command.order_id, lines=lines, fingerprint=fingerprint, ttl=command.ttl
        )
        if created is None:
            existing = await reservations.by_order(command.order_id)
            assert existing is not None  # the insert conflicted on it
            return rules.replay(existing, fingerprint)
        # The row locks come last, so they are held only for the update and the commit.
        await StockRepository(uow.session).record(*rules.reserve_movements(command.order_id, lines))
        await uow.publish(
            events.reserved(created),
            aggregate_type=events.AGGREGATE,
            aggregate_id=str(command.order_id),
        )
        holds = StockHolds(uow.session)
        held = await holds.hold(lines)
        if len(held) < len(lines):
            await _refuse_shortfall(holds, command.lines, command.order_id)
    return created


async def _refuse_shortfall(
    holds: StockHolds, lines: tuple[ReservationLine, ...], order_id: uuid.UUID
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


async def commit_reservation(order_id: uuid.UUID, uow: UnitOfWork) -> Reservation:
    """The order's reserved units are sold. Repeating it is harmless; after expiry it is refused."""
    async with uow:
        reservations = ReservationRepository(uow.session)
        existing = await reservations.by_order(order_id, for_update=True)
        if existing is None:
            raise NotFound(
                f"no reservation for order {order_id}", metadata={"order_id": str(order_id)}
            )
        now = (await uow.session.execute(select(func.now()))).scalar_one()
        rules.check_commit(existing, now)
        if existing.status is ReservationStatus.COMMITTED:
            return existing
        committed = await reservations.close(existing, ReservationStatus.COMMITTED)
        await StockRepository(uow.session).record(*rules.commit_movements(committed))
        await uow.publish(
            events.committed(committed),
            aggregate_type=events.AGGREGATE,
            aggregate_id=str(order_id),
        )
        await StockHolds(uow.session).settle(committed.lines)
    return committed


async def release_reservation(command: ReleaseReservation, uow: UnitOfWork) -> Reservation:
    """Give the order's units back: a hold is released, sold units are returned to stock, once.

    Repeating it is harmless. Releasing an order that has no reservation leaves a released
    mark, so a reservation request that arrives after its caller gave up (and compensated) is
    refused instead of holding stock.
    """
    async with uow:
        reservations = ReservationRepository(uow.session)
        existing = await reservations.by_order(command.order_id, for_update=True)
        if existing is None:
            tombstone = await reservations.create(
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
        closed = await reservations.close(existing, after, command.reason)
        if after is ReservationStatus.RETURNED:
            await StockRepository(uow.session).record(*rules.return_movements(closed))
            await _publish_release(uow, closed)
            await StockHolds(uow.session).restock(closed.lines)
            log.info("returned the sold units of cancelled order %s", command.order_id)
        else:
            await _record_release(uow, closed, "released")
            await StockHolds(uow.session).give_back(closed.lines)
    return closed


async def expire_reservations(
    uow: UnitOfWork, *, as_of: datetime | None = None, limit: int = 500
) -> list[Reservation]:
    """Release a batch of reservations past their expiry (as of now, or `as_of`)."""
    async with uow:
        expired = await ReservationRepository(uow.session).expire_due(as_of=as_of, limit=limit)
        for reservation in expired:
            await _record_release(uow, reservation, "expired")
        # One move over the batch's summed lines keeps the SKU lock order global.
        await StockHolds(uow.session).give_back(rules.merged_lines(expired))
    if expired:
        log.info("released %d expired reservations", len(expired))
    return expired


async def expire_all_due(unit_of_work: Callable[[], UnitOfWork], *, batch: int) -> int:
    """Release every reservation past its expiry, a batch per transaction; how many."""
    total = 0
    while True:
        expired = await expire_reservations(unit_of_work(), limit=batch)
        total += len(expired)
        if len(expired) < batch:
            return total


async def _record_release(uow: UnitOfWork, reservation: Reservation, reason: str) -> None:
    await StockRepository(uow.session).record(*rules.release_movements(reservation, reason))
    await _publish_release(uow, reservation)


async def _publish_release(uow: UnitOfWork, reservation: Reservation) -> None:
    await uow.publish(
        events.released(reservation),
        aggregate_type=events.AGGREGATE,
        aggregate_id=str(reservation.order_id),
    )


async def get_reservation(
    uow: UnitOfWork, *, order_id: uuid.UUID | None = None, reservation_id: uuid.UUID | None = None
) -> Reservation:
    """A reservation by order or by its own id."""
    async with uow:
        reservations = ReservationRepository(uow.session)
        if order_id is not None:
            found = await reservations.by_order(order_id)
        else:
            assert reservation_id is not None
            found = await reservations.by_id(reservation_id)
    if found is None:
        raise NotFound(f"no reservation for {order_id or reservation_id}")
    return found


async def audit(uow: UnitOfWork, skus: tuple[str, ...] = ()) -> list[AuditedSku]:
    """Every (or the given) SKU recomputed from the ledger."""
    async with uow:
        return await audit_stock(uow.session, skus)

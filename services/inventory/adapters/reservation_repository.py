"""Reads and writes of reservations and their lines."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace_platform.db import TransactionClock
from marketplace_platform.ids import new_id
from services.inventory.adapters.tables import reservation_lines, reservations
from services.inventory.domain.reservation import (
    ReleaseReason,
    Reservation,
    ReservationLine,
    ReservationStatus,
)
from services.inventory.service_layer.ports import Reservations

_LINES = (
    select(
        func.array_agg(reservation_lines.c.sku).label("skus"),
        func.array_agg(reservation_lines.c.quantity).label("quantities"),
    )
    .where(reservation_lines.c.reservation_id == reservations.c.reservation_id)
    .lateral("lines")
)
# A reservation with its lines, and the transaction's now() (what an expiry is judged by).
_WITH_LINES = select(
    reservations,
    _LINES.c.skus,
    _LINES.c.quantities,
    func.now().label("transaction_now"),
).select_from(reservations.outerjoin(_LINES, true()))


# The order's reservation and its lines in one statement; nothing when the order has one.
_CREATE = text(
    """
    WITH reservation AS (
        INSERT INTO inventory.reservations (reservation_id, order_id, status, fingerprint,
                                            expires_at, closed_at, release_reason)
        VALUES (:reservation_id, :order_id, :status, :fingerprint,
                now() + CAST(:ttl AS interval), CASE WHEN :closed THEN now() END,
                :release_reason)
        ON CONFLICT (order_id) DO NOTHING
        RETURNING *
    ), lines AS (
        INSERT INTO inventory.reservation_lines (reservation_id, sku, quantity)
        SELECT reservation.reservation_id, v.sku, v.quantity
        FROM reservation,
             unnest(CAST(:skus AS text[]), CAST(:quantities AS integer[])) AS v(sku, quantity)
    )
    SELECT * FROM reservation
    """
)
_CLOSE = (
    reservations.update()
    .where(reservations.c.reservation_id == bindparam("reservation_key"))
    .values(
        status=bindparam("status"),
        closed_at=func.now(),
        release_reason=bindparam("release_reason"),
    )
    .returning(*reservations.c)
)


class ReservationRepository(Reservations):
    """Reservations of the inventory schema, within the caller's transaction. Reading one also
    reads the transaction's now() and hands it to `clock`, so judging its expiry costs no
    statement of its own."""

    def __init__(self, session: AsyncSession, *, clock: TransactionClock) -> None:
        self.session = session
        self._clock = clock

    async def create(
        self,
        *,
        order_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        fingerprint: str,
        ttl: timedelta,
        status: ReservationStatus = ReservationStatus.ACTIVE,
        release_reason: ReleaseReason | None = None,
    ) -> Reservation | None:
        """Insert the order's reservation; None when the order already has one."""
        found = await self.session.execute(
            _CREATE,
            {
                "reservation_id": new_id(),
                "order_id": order_id,
                "status": status.value,
                "fingerprint": fingerprint,
                "ttl": ttl,
                "closed": status is not ReservationStatus.ACTIVE,
                "release_reason": release_reason.value if release_reason else None,
                "skus": [line.sku for line in lines],
                "quantities": [line.quantity for line in lines],
            },
        )
        row = found.one_or_none()
        if row is None:
            return None
        return _to_reservation(row._mapping, tuple(lines))

    async def by_order(
        self, order_id: uuid.UUID, *, for_update: bool = False
    ) -> Reservation | None:
        """The order's reservation with its lines (row-locked when for_update)."""
        query = _WITH_LINES.where(reservations.c.order_id == order_id)
        if for_update:
            query = query.with_for_update(of=reservations)
        return self._noted((await self.session.execute(query)).one_or_none())

    async def by_id(self, reservation_id: uuid.UUID) -> Reservation | None:
        """A reservation with its lines."""
        query = _WITH_LINES.where(reservations.c.reservation_id == reservation_id)
        return self._noted((await self.session.execute(query)).one_or_none())

    def _noted(self, row: Row[Any] | None) -> Reservation | None:
        if row is not None:
            self._clock.note(row.transaction_now)
        return _from_row(row)

    async def close(
        self,
        reservation: Reservation,
        status: ReservationStatus,
        release_reason: ReleaseReason | None = None,
    ) -> Reservation:
        """Mark an active reservation committed, released or expired."""
        found = await self.session.execute(
            _CLOSE,
            {
                "reservation_key": reservation.reservation_id,
                "status": status,
                "release_reason": release_reason,
            },
        )
        return _to_reservation(found.one()._mapping, reservation.lines)

    async def expire_due(self, *, as_of: datetime | None, limit: int) -> list[Reservation]:
        """Mark up to `limit` active reservations past their expiry EXPIRED, skipping any that
        another sweeper or a commit holds; return them with their lines."""
        cutoff = as_of if as_of is not None else func.now()
        due = (
            select(reservations.c.reservation_id)
            .where(
                and_(
                    reservations.c.status == ReservationStatus.ACTIVE,
                    reservations.c.expires_at <= cutoff,
                )
            )
            .order_by(reservations.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        expired = (
            (
                await self.session.execute(
                    reservations.update()
                    .where(reservations.c.reservation_id.in_(due))
                    .values(
                        status=ReservationStatus.EXPIRED,
                        closed_at=func.now(),
                        release_reason=ReleaseReason.EXPIRED,
                    )
                    .returning(reservations.c.reservation_id)
                )
            )
            .scalars()
            .all()
        )
        if not expired:
            return []
        rows = await self.session.execute(
            _WITH_LINES.where(reservations.c.reservation_id.in_(expired))
        )
        return [r for r in (_from_row(row) for row in rows) if r is not None]


def _from_row(row: Row[Any] | None) -> Reservation | None:
    if row is None:
        return None
    mapping = row._mapping
    lines = tuple(
        ReservationLine(sku, quantity)
        for sku, quantity in zip(mapping["skus"] or (), mapping["quantities"] or (), strict=True)
        if sku is not None
    )
    return _to_reservation(mapping, tuple(sorted(lines)))


def _to_reservation(mapping: Any, lines: tuple[ReservationLine, ...]) -> Reservation:
    reason = mapping["release_reason"]
    return Reservation(
        reservation_id=mapping["reservation_id"],
        order_id=mapping["order_id"],
        status=ReservationStatus(mapping["status"]),
        lines=lines,
        fingerprint=mapping["fingerprint"],
        expires_at=mapping["expires_at"],
        created_at=mapping["created_at"],
        closed_at=mapping["closed_at"],
        release_reason=ReleaseReason(reason) if reason else None,
    )

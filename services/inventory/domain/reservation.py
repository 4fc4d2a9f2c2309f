"""Reservations of stock for an order: all lines or none, held until committed, released or
expired. Pure rules; the repository applies them with row locks."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from marketplace_platform.errors import FailedPrecondition, ResourceExhausted
from services.inventory.domain.stock import Movement


class ReservationStatus(StrEnum):
    """Where a reservation is in its life."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    RETURNED = "RETURNED"  # sold, then the order was cancelled: the units went back on hand


class ReleaseReason(StrEnum):
    """Why reserved units went back to available stock."""

    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    FRAUD_REJECTED = "FRAUD_REJECTED"
    TIMEOUT = "TIMEOUT"
    CUSTOMER_CANCELLED = "CUSTOMER_CANCELLED"
    EXPIRED = "EXPIRED"
    ORDER_FAILED = "ORDER_FAILED"
    OPERATOR = "OPERATOR"


@dataclass(frozen=True, order=True)
class ReservationLine:
    """Units of one SKU held for the order."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    """Stock held for one order."""

    reservation_id: uuid.UUID
    order_id: uuid.UUID
    status: ReservationStatus
    lines: tuple[ReservationLine, ...]
    fingerprint: str
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None = None
    release_reason: ReleaseReason | None = None


class OutOfStock(ResourceExhausted):
    """Some line asks for more units than are available; nothing was reserved."""

    reason = "OUT_OF_STOCK"


class ReservationMismatch(FailedPrecondition):
    """The order already has a reservation made from a different request."""

    reason = "RESERVATION_MISMATCH"


class ReservationClosed(FailedPrecondition):
    """The reservation can no longer change that way (e.g. commit after release)."""

    reason = "RESERVATION_CLOSED"


# A release that arrives before any reservation leaves this mark, so a reservation request
# that arrives late (its caller already gave up and compensated) is refused, not applied.
TOMBSTONE_FINGERPRINT = "released-before-reserved"


def canonical_lines(lines: list[ReservationLine]) -> tuple[ReservationLine, ...]:
    """Lines in SKU order: the order every lock is taken in, so reservations cannot deadlock."""
    return tuple(sorted(lines))


def fingerprint(lines: tuple[ReservationLine, ...]) -> str:
    """What identifies a reservation request, whatever order its lines came in."""
    text = ";".join(f"{line.sku}={line.quantity}" for line in sorted(lines))
    return hashlib.sha256(text.encode()).hexdigest()


def replay(existing: Reservation, requested_fingerprint: str) -> Reservation:
    """The answer to a repeated reservation request for an order that already has one."""
    if existing.fingerprint == TOMBSTONE_FINGERPRINT:
        raise ReservationClosed(
            f"order {existing.order_id} was released before it was reserved",
            metadata={"order_id": str(existing.order_id)},
        )
    if existing.fingerprint != requested_fingerprint:
        raise ReservationMismatch(
            f"order {existing.order_id} already holds a different reservation",
            metadata={"order_id": str(existing.order_id)},
        )
    return existing


def check_commit(existing: Reservation, now: datetime) -> None:
    """Refuse a commit the reservation cannot take; a repeated commit is fine."""
    if existing.status is ReservationStatus.COMMITTED:
        return
    if existing.status is ReservationStatus.ACTIVE and existing.expires_at <= now:
        raise ReservationClosed(
            f"reservation for order {existing.order_id} expired at {existing.expires_at}",
            metadata={"order_id": str(existing.order_id), "status": "EXPIRED"},
        )
    if existing.status is not ReservationStatus.ACTIVE:
        raise ReservationClosed(
            f"reservation for order {existing.order_id} is {existing.status}, cannot commit",
            metadata={"order_id": str(existing.order_id), "status": existing.status},
        )


def released_as(existing: Reservation) -> ReservationStatus | None:
    """What releasing the reservation makes of it: ACTIVE units are RELEASED, sold ones
    RETURNED to stock; None when its units are already back (released, returned, expired)."""
    if existing.status is ReservationStatus.ACTIVE:
        return ReservationStatus.RELEASED
    if existing.status is ReservationStatus.COMMITTED:
        return ReservationStatus.RETURNED
    return None


def reserve_movements(order_id: uuid.UUID, lines: tuple[ReservationLine, ...]) -> list[Movement]:
    """Ledger rows of units set aside for an order."""
    return [Movement(line.sku, 0, line.quantity, "reserved", order_id) for line in lines]


def commit_movements(reservation: Reservation) -> list[Movement]:
    """Ledger rows of reserved units sold: they leave on hand and reserved."""
    return [
        Movement(line.sku, -line.quantity, -line.quantity, "committed", reservation.order_id)
        for line in reservation.lines
    ]


def return_movements(reservation: Reservation) -> list[Movement]:
    """Ledger rows of sold units back on hand: the order was cancelled after its commit."""
    return [
        Movement(line.sku, line.quantity, 0, "returned", reservation.order_id)
        for line in reservation.lines
    ]


def release_movements(reservation: Reservation, reason: str) -> list[Movement]:
    """Ledger rows of reserved units made available again."""
    return [
        Movement(line.sku, 0, -line.quantity, reason, reservation.order_id)
        for line in reservation.lines
    ]


def merged_lines(reservations: list[Reservation]) -> tuple[ReservationLine, ...]:
    """All the reservations' lines summed per SKU, in SKU order."""
    totals: dict[str, int] = {}
    for reservation in reservations:
        for line in reservation.lines:
            totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return tuple(ReservationLine(sku, units) for sku, units in sorted(totals.items()))

"""Reservation rules, with no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.inventory.domain import reservation as rules
from services.inventory.domain.reservation import (
    Reservation,
    ReservationClosed,
    ReservationLine,
    ReservationMismatch,
    ReservationStatus,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LINES = (ReservationLine("A", 2), ReservationLine("B", 1))


def reservation(
    status: ReservationStatus, *, expires_in: timedelta = timedelta(minutes=5)
) -> Reservation:
    return Reservation(
        reservation_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        status=status,
        lines=LINES,
        fingerprint=rules.fingerprint(LINES),
        expires_at=NOW + expires_in,
        created_at=NOW,
    )


def test_lines_are_locked_in_sku_order_and_fingerprinted_regardless_of_order() -> None:
    shuffled = [ReservationLine("B", 1), ReservationLine("A", 2)]
    assert rules.canonical_lines(shuffled) == LINES
    assert rules.fingerprint(tuple(shuffled)) == rules.fingerprint(LINES)
    assert rules.fingerprint((ReservationLine("A", 3),)) != rules.fingerprint(
        (ReservationLine("A", 2),)
    )


def test_a_replay_returns_the_existing_reservation_or_refuses_a_different_one() -> None:
    existing = reservation(ReservationStatus.ACTIVE)
    assert rules.replay(existing, rules.fingerprint(LINES)) is existing
    with pytest.raises(ReservationMismatch):
        rules.replay(existing, rules.fingerprint((ReservationLine("A", 9),)))


def test_commit_is_refused_after_expiry_release_or_expiry_sweep() -> None:
    rules.check_commit(reservation(ReservationStatus.ACTIVE), NOW)
    rules.check_commit(reservation(ReservationStatus.COMMITTED), NOW)
    for refused in (
        reservation(ReservationStatus.ACTIVE, expires_in=timedelta(seconds=-1)),
        reservation(ReservationStatus.RELEASED),
        reservation(ReservationStatus.EXPIRED),
    ):
        with pytest.raises(ReservationClosed):
            rules.check_commit(refused, NOW)


def test_a_release_releases_a_hold_returns_sold_units_and_repeats_without_effect() -> None:
    assert rules.released_as(reservation(ReservationStatus.ACTIVE)) is ReservationStatus.RELEASED
    assert rules.released_as(reservation(ReservationStatus.COMMITTED)) is ReservationStatus.RETURNED
    for done in (ReservationStatus.RELEASED, ReservationStatus.EXPIRED, ReservationStatus.RETURNED):
        assert rules.released_as(reservation(done)) is None


def test_returned_units_go_back_on_hand_without_touching_reserved() -> None:
    sold = reservation(ReservationStatus.COMMITTED)
    commit = rules.commit_movements(sold)
    back = rules.return_movements(sold)
    assert sum(m.on_hand_delta for m in commit + back) == 0
    assert all(m.reserved_delta == 0 for m in back)


def test_the_ledger_rows_of_each_transition_balance() -> None:
    held = reservation(ReservationStatus.ACTIVE)
    reserve = rules.reserve_movements(held.order_id, held.lines)
    commit = rules.commit_movements(held)
    assert sum(m.reserved_delta for m in reserve + commit) == 0
    assert sum(m.on_hand_delta for m in commit) == -3
    assert sum(m.reserved_delta for m in rules.release_movements(held, "released")) == -3


def test_a_sweep_batch_gives_back_summed_lines_in_sku_order() -> None:
    batch = [reservation(ReservationStatus.EXPIRED), reservation(ReservationStatus.EXPIRED)]
    assert rules.merged_lines(batch) == (ReservationLine("A", 4), ReservationLine("B", 2))

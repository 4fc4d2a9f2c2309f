"""Checkout's pure rules besides the state machine: idempotency decisions, tax, fraud."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from marketplace_platform.errors import IdempotencyKeyReused, RequestInFlight
from marketplace_platform.money import Money
from services.checkout.domain import fraud, tax
from services.checkout.domain.idempotency import (
    IdempotencyRecord,
    PlacedOrder,
    RecordState,
    fingerprint,
    resume,
)
from services.checkout.domain.order import FraudDecision

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PLACED = PlacedOrder(uuid.UUID(int=7), "PENDING")


def record(state: RecordState, *, lease_left: float = 10.0, fp: str = "fp") -> IdempotencyRecord:
    return IdempotencyRecord(
        customer_id="c",
        key="key-12345",
        fingerprint=fp,
        state=state,
        locked_until=NOW + timedelta(seconds=lease_left),
        response=PLACED if state is RecordState.COMPLETED else None,
    )


def test_a_completed_record_replays_its_response() -> None:
    assert resume(record(RecordState.COMPLETED), "fp", NOW) == PLACED


def test_a_different_request_under_the_key_is_refused_whatever_the_state() -> None:
    for state in RecordState:
        with pytest.raises(IdempotencyKeyReused):
            resume(record(state), "other", NOW)


def test_a_live_lease_means_in_flight_and_an_expired_one_may_be_taken_over() -> None:
    with pytest.raises(RequestInFlight):
        resume(record(RecordState.STARTED, lease_left=0.5), "fp", NOW)
    assert resume(record(RecordState.STARTED, lease_left=-0.5), "fp", NOW) is None


def test_fingerprint_ignores_key_order_and_sees_every_value() -> None:
    a = fingerprint({"cart_id": "x", "address": {"city": "A", "line1": "1"}})
    b = fingerprint({"address": {"line1": "1", "city": "A"}, "cart_id": "x"})
    c = fingerprint({"cart_id": "x", "address": {"city": "B", "line1": "1"}})
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("country", "subtotal", "expected"),
    [
        ("US", 1000, 73),  # 72.5 rounds half up
        ("DE", 1000, 190),
        ("GB", 999, 200),  # 199.8
        ("ZZ", 1000, 100),  # the default rate
        ("us", 1000, 73),
        ("US", 0, 0),
    ],
)
def test_tax_by_country(country: str, subtotal: int, expected: int) -> None:
    assert tax.tax_on(Money(subtotal, "USD"), country) == Money(expected, "USD")


def test_tax_is_deterministic() -> None:
    figures = {tax.tax_on(Money(12_345, "EUR"), "FR") for _ in range(100)}
    assert figures == {Money(2469, "EUR")}


def test_fraud_rejects_the_highest_risk_method_and_approves_others() -> None:
    rejected = fraud.assess(payment_method="pm_card_riskLevelHighest", total=Money(100, "USD"))
    assert rejected.decision is FraudDecision.REJECT
    assert rejected.score >= fraud.REJECT_AT_SCORE
    for method in ("pm_card_visa", "pm_card_chargeDeclined"):
        approved = fraud.assess(payment_method=method, total=Money(100, "USD"))
        assert approved.decision is FraudDecision.APPROVE
        assert 0 <= approved.score < fraud.REJECT_AT_SCORE
    large = fraud.assess(payment_method="pm_card_visa", total=Money(500_000, "USD"))
    assert large.decision is FraudDecision.APPROVE
    assert large.score > approved.score

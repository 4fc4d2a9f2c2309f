"""The order aggregate's state machine, with no I/O: every legal transition changes the order,
every recognised repeat changes nothing, every illegal transition raises."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from marketplace_platform.errors import FailedPrecondition
from marketplace_platform.money import Money
from services.checkout.domain.errors import CancelRequested, IllegalTransition
from services.checkout.domain.order import (
    FailureReason,
    FraudAssessment,
    FraudDecision,
    Order,
    OrderLine,
    OrderStatus,
    ShippingAddress,
)

RESERVATION = uuid.UUID(int=1)
PAYMENT = uuid.UUID(int=2)
SHIPPED_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def new_order(merchants: tuple[str, ...] = ("acme",)) -> Order:
    return Order(
        order_id=uuid.uuid4(),
        customer_id="customer-1",
        cart_id=uuid.uuid4(),
        lines=tuple(
            OrderLine(f"SKU-{m}", m, f"thing of {m}", 2, Money(500, "USD")) for m in merchants
        ),
        shipping_address=ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US"),
        payment_method="pm_card_visa",
    )


def pending() -> Order:
    return new_order()


def taxed() -> Order:
    order = new_order()
    order.record_tax(Money(73, "USD"))
    return order


def cancel_requested() -> Order:
    order = taxed()
    order.request_cancel()
    return order


def confirmed() -> Order:
    order = taxed()
    order.confirm(reservation_id=RESERVATION, payment_id=PAYMENT)
    order.request_shipments([uuid.uuid4()])
    return order


def shipped() -> Order:
    order = confirmed()
    ship(order)
    return order


def cancelled() -> Order:
    order = new_order()
    order.fail(FailureReason.OUT_OF_STOCK, "SKU-acme")
    return order


def ship(order: Order, shipment_id: uuid.UUID | None = None, merchant: str = "acme") -> bool:
    return order.mark_shipped(
        shipment_id=shipment_id or order.shipments[0].shipment_id,
        merchant_id=merchant,
        carrier="UPS",
        tracking_number="1Z999",
        shipped_at=SHIPPED_AT,
    )


STATES: dict[str, Callable[[], Order]] = {
    "pending": pending,
    "taxed": taxed,
    "cancel_requested": cancel_requested,
    "confirmed": confirmed,
    "shipped": shipped,
    "cancelled": cancelled,
}

Transition = Callable[[Order], bool]
TRANSITIONS: dict[str, Transition] = {
    "record_tax": lambda o: o.record_tax(Money(99, "USD")),
    "record_fraud": lambda o: o.record_fraud(
        FraudAssessment(FraudDecision.APPROVE, 10, "no risk signals")
    ),
    "confirm": lambda o: o.confirm(reservation_id=RESERVATION, payment_id=PAYMENT),
    "confirm_other_ids": lambda o: o.confirm(reservation_id=uuid.uuid4(), payment_id=PAYMENT),
    "fail": lambda o: o.fail(FailureReason.PAYMENT_DECLINED, "card_declined"),
    "request_cancel": lambda o: o.request_cancel(),
    "cancel_confirmed": lambda o: o.cancel_confirmed(),
    "mark_shipped": lambda o: ship(o) if o.shipments else ship(o, uuid.uuid4()),
    "mark_unknown_shipment": lambda o: ship(o, uuid.uuid4()),
}

CHANGES, REPEAT = "changes", "repeat"
# The whole table: (state, transition) -> what happens. Anything else is an error class.
EXPECTED: dict[tuple[str, str], str | type[Exception]] = {
    ("pending", "record_tax"): CHANGES,
    ("taxed", "record_tax"): REPEAT,
    ("cancel_requested", "record_tax"): REPEAT,
    ("confirmed", "record_tax"): REPEAT,
    ("shipped", "record_tax"): REPEAT,
    ("cancelled", "record_tax"): IllegalTransition,
    ("pending", "record_fraud"): CHANGES,
    ("taxed", "record_fraud"): CHANGES,
    ("cancel_requested", "record_fraud"): CHANGES,
    ("confirmed", "record_fraud"): IllegalTransition,
    ("shipped", "record_fraud"): IllegalTransition,
    ("cancelled", "record_fraud"): IllegalTransition,
    ("pending", "confirm"): IllegalTransition,  # no tax yet: the total is unknown
    ("taxed", "confirm"): CHANGES,
    ("cancel_requested", "confirm"): CancelRequested,
    ("confirmed", "confirm"): REPEAT,
    ("shipped", "confirm"): REPEAT,
    ("cancelled", "confirm"): CancelRequested,
    ("pending", "confirm_other_ids"): IllegalTransition,
    ("taxed", "confirm_other_ids"): CHANGES,
    ("cancel_requested", "confirm_other_ids"): CancelRequested,
    ("confirmed", "confirm_other_ids"): IllegalTransition,
    ("shipped", "confirm_other_ids"): IllegalTransition,
    ("cancelled", "confirm_other_ids"): CancelRequested,
    ("pending", "fail"): CHANGES,
    ("taxed", "fail"): CHANGES,
    ("cancel_requested", "fail"): CHANGES,
    ("confirmed", "fail"): IllegalTransition,
    ("shipped", "fail"): IllegalTransition,
    ("cancelled", "fail"): REPEAT,
    ("pending", "request_cancel"): CHANGES,
    ("taxed", "request_cancel"): CHANGES,
    ("cancel_requested", "request_cancel"): REPEAT,
    ("confirmed", "request_cancel"): IllegalTransition,
    ("shipped", "request_cancel"): IllegalTransition,
    ("cancelled", "request_cancel"): REPEAT,
    ("pending", "cancel_confirmed"): IllegalTransition,
    ("taxed", "cancel_confirmed"): IllegalTransition,
    ("cancel_requested", "cancel_confirmed"): IllegalTransition,
    ("confirmed", "cancel_confirmed"): CHANGES,
    ("shipped", "cancel_confirmed"): IllegalTransition,
    ("cancelled", "cancel_confirmed"): REPEAT,
    ("pending", "mark_shipped"): IllegalTransition,
    ("taxed", "mark_shipped"): IllegalTransition,
    ("cancel_requested", "mark_shipped"): IllegalTransition,
    ("confirmed", "mark_shipped"): CHANGES,
    ("shipped", "mark_shipped"): REPEAT,
    ("cancelled", "mark_shipped"): IllegalTransition,
    ("pending", "mark_unknown_shipment"): IllegalTransition,
    ("taxed", "mark_unknown_shipment"): IllegalTransition,
    ("cancel_requested", "mark_unknown_shipment"): IllegalTransition,
    ("confirmed", "mark_unknown_shipment"): IllegalTransition,
    ("shipped", "mark_unknown_shipment"): IllegalTransition,
    ("cancelled", "mark_unknown_shipment"): IllegalTransition,
}


def snapshot(order: Order) -> tuple[object, ...]:
    return (
        order.status,
        order.failure_reason,
        order.failure_detail,
        order.tax,
        order.fraud,
        order.reservation_id,
        order.payment_id,
        order.cancel_requested,
        order.shipments,
    )


def test_the_table_covers_every_state_and_transition() -> None:
    assert set(EXPECTED) == {(s, t) for s in STATES for t in TRANSITIONS}


@pytest.mark.parametrize(("state", "transition"), sorted(EXPECTED))
def test_transition(state: str, transition: str) -> None:
    order = STATES[state]()
    before = snapshot(order)
    expected = EXPECTED[(state, transition)]
    if isinstance(expected, type):
        with pytest.raises(expected) as raised:
            TRANSITIONS[transition](order)
        # Refusals reach the caller as FAILED_PRECONDITION with the order id, and change nothing.
        assert isinstance(raised.value, FailedPrecondition)
        assert raised.value.metadata["order_id"] == str(order.order_id)
        assert snapshot(order) == before
    elif expected == REPEAT:
        assert TRANSITIONS[transition](order) is False
        assert snapshot(order) == before
    else:
        assert TRANSITIONS[transition](order) is True
        assert snapshot(order) != before


def test_confirm_records_the_reservation_and_payment() -> None:
    order = taxed()
    assert order.confirm(reservation_id=RESERVATION, payment_id=PAYMENT)
    assert order.status is OrderStatus.CONFIRMED
    assert (order.reservation_id, order.payment_id) == (RESERVATION, PAYMENT)


def test_cancel_requested_carries_its_own_reason_for_the_saga() -> None:
    with pytest.raises(CancelRequested) as raised:
        cancel_requested().confirm(reservation_id=RESERVATION, payment_id=PAYMENT)
    assert raised.value.reason == "CANCEL_REQUESTED"


def test_fail_keeps_the_first_reason() -> None:
    order = new_order()
    assert order.fail(FailureReason.FRAUD_REJECTED, "score 95")
    assert not order.fail(FailureReason.TIMEOUT, "late")
    assert (order.status, order.failure_reason, order.failure_detail) == (
        OrderStatus.CANCELLED,
        FailureReason.FRAUD_REJECTED,
        "score 95",
    )


def test_customer_cancel_of_a_confirmed_order() -> None:
    order = confirmed()
    assert order.cancel_confirmed()
    assert order.status is OrderStatus.CANCELLED
    assert order.failure_reason is FailureReason.CUSTOMER_CANCELLED


def test_one_shipment_per_merchant_and_shipped_when_all_have_shipped() -> None:
    order = new_order(("acme", "globex", "acme"))
    order.record_tax(Money(0, "USD"))
    order.confirm(reservation_id=RESERVATION, payment_id=PAYMENT)
    shipments = order.request_shipments([uuid.uuid4(), uuid.uuid4()])
    assert [s.merchant_id for s in shipments] == ["acme", "globex"]
    assert [line.merchant_id for line in order.lines_of("acme")] == ["acme", "acme"]
    assert order.request_shipments([uuid.uuid4(), uuid.uuid4()]) == shipments  # a repeat

    assert ship(order, shipments[0].shipment_id, "acme")
    assert order.status is OrderStatus.CONFIRMED
    with pytest.raises(IllegalTransition):  # a shipment belongs to its merchant
        ship(order, shipments[1].shipment_id, "acme")
    assert ship(order, shipments[1].shipment_id, "globex")
    assert snapshot(order)[0] is OrderStatus.SHIPPED  # (read afresh: mypy narrowed status)
    assert not ship(order, shipments[1].shipment_id, "globex")


def test_money_is_summed_per_currency() -> None:
    order = new_order(("acme", "globex"))
    assert order.subtotal == Money(2000, "USD")
    assert order.total is None
    order.record_tax(Money(145, "USD"))
    assert order.total == Money(2145, "USD")
    with pytest.raises(ValueError, match="cannot add"):
        Money(1, "USD") + Money(1, "EUR")


def test_an_order_needs_lines_in_one_currency() -> None:
    address = ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")
    with pytest.raises(ValueError, match="at least one line"):
        Order(uuid.uuid4(), "c", uuid.uuid4(), (), address, "pm_card_visa")
    mixed = (
        OrderLine("A", "m", "a", 1, Money(1, "USD")),
        OrderLine("B", "m", "b", 1, Money(1, "EUR")),
    )
    with pytest.raises(ValueError, match="one currency"):
        Order(uuid.uuid4(), "c", uuid.uuid4(), mixed, address, "pm_card_visa")


def test_tax_in_another_currency_is_refused() -> None:
    order = new_order()
    with pytest.raises(ValueError, match="does not fit"):
        order.record_tax(Money(10, "EUR"))
    assert order.tax is None

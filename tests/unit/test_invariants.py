"""The invariant checker on hand-made snapshots: a healthy one passes, and each kind of broken
promise (double order, stuck order, double charge, orphan, oversell, lost stock, missing or extra
parcel, dropped message) fails with a counterexample naming it."""

from __future__ import annotations

import dataclasses

import pytest

from verification.invariants import (
    InvariantResult,
    Verdict,
    check_all,
    no_double_charge,
    no_oversell,
    nothing_dropped,
    one_order_per_key_and_all_settle,
    one_shipping_effect,
    violations,
)
from verification.plan import make_plan
from verification.snapshot import (
    ClientCheckout,
    Intent,
    MessageFlow,
    Order,
    OrderLine,
    Snapshot,
    StockLevel,
)

CONFIRMED = Order(
    order_id="o-1", customer_id="c-1", cart_id="cart-1", status="CONFIRMED", failure_reason=None,
    total_minor=1_080, lines=(OrderLine(sku="MUG", merchant_id="m-1", quantity=2),),
)  # fmt: skip
CANCELLED = Order(
    order_id="o-2", customer_id="c-2", cart_id="cart-2", status="CANCELLED",
    failure_reason="PAYMENT_DECLINED", total_minor=540,
    lines=(OrderLine(sku="MUG", merchant_id="m-1", quantity=1),),
)  # fmt: skip
AUTHORIZED = Intent(
    intent_id="pi_1", order_id="o-1", status="requires_capture", amount=1_080,
    amount_capturable=1_080, amount_received=0,
)  # fmt: skip
DECLINED = Intent(
    intent_id="pi_2", order_id="o-2", status="requires_payment_method", amount=540,
    amount_capturable=0, amount_received=0,
)  # fmt: skip


def healthy() -> Snapshot:
    """Two settled orders, stock conserved, one authorization, parcels and queues in order."""
    return Snapshot(
        orders=(CONFIRMED, CANCELLED),
        client_checkouts=(
            ClientCheckout(
                customer_id="c-1",
                idempotency_key="k-1",
                cart_id="cart-1",
                order_ids=frozenset({"o-1"}),
            ),
            ClientCheckout(
                customer_id="c-2",
                idempotency_key="k-2",
                cart_id="cart-2",
                order_ids=frozenset({"o-2"}),
            ),
        ),
        initial_stock={"MUG": 5},
        stock=(StockLevel(sku="MUG", on_hand=3, reserved=0, sold=2),),
        audit_discrepancies=(),
        intents=(AUTHORIZED, DECLINED),
        reconciliation_ran=True,
        settle_seconds=12.0,
        shipments={"o-1": 1},
        message_flow=MessageFlow(
            unpublished_outbox={"checkout": 0},
            queue_depths={"shipping": 0},
            dead_letters={"shipping-dlq": 1},
        ),
    )


def failed_with(result: InvariantResult, text: str) -> None:
    assert result.verdict is Verdict.FAIL, result
    assert any(text in c for c in result.counterexamples), result.counterexamples


def test_a_healthy_snapshot_passes_every_invariant() -> None:
    results = check_all(healthy())

    assert [r.verdict for r in results] == [Verdict.PASS] * 5
    assert violations(results) == 0
    assert "shipping-dlq 1" in results[4].examined  # a parked message is counted, not hidden


def test_two_orders_answered_under_one_key_fail_invariant_1() -> None:
    checkout = dataclasses.replace(
        healthy().client_checkouts[0], order_ids=frozenset({"o-1", "o-9"})
    )
    snapshot = dataclasses.replace(healthy(), client_checkouts=(checkout,))

    result = one_order_per_key_and_all_settle(snapshot)

    failed_with(result, "was answered 2 orders")
    failed_with(result, "order o-9, which checkout does not have")


def test_two_orders_for_one_cart_fail_invariant_1() -> None:
    twin = dataclasses.replace(CANCELLED, order_id="o-3", cart_id="cart-1")
    snapshot = dataclasses.replace(healthy(), orders=(CONFIRMED, twin))

    failed_with(one_order_per_key_and_all_settle(snapshot), "cart cart-1 has 2 orders")


def test_an_order_still_pending_or_a_running_saga_fails_invariant_1() -> None:
    stuck = dataclasses.replace(CANCELLED, status="PENDING", failure_reason=None)
    snapshot = dataclasses.replace(healthy(), orders=(CONFIRMED, stuck), running_sagas=("o-2",))

    result = one_order_per_key_and_all_settle(snapshot)

    failed_with(result, "order o-2 still PENDING after 12s")
    failed_with(result, "saga execution o-2 still RUNNING")


def test_a_second_live_authorization_is_a_double_charge() -> None:
    twice = dataclasses.replace(AUTHORIZED, intent_id="pi_9")
    snapshot = dataclasses.replace(healthy(), intents=(AUTHORIZED, twice, DECLINED))

    result = no_double_charge(snapshot)

    failed_with(result, "order o-1 holds 2 live intents")
    failed_with(result, "order o-1 authorized 2160 > total 1080")


def test_an_authorization_above_the_total_or_a_capture_above_it_fails() -> None:
    greedy = dataclasses.replace(AUTHORIZED, amount=2_000, amount_received=2_500,
                                 status="succeeded")  # fmt: skip
    snapshot = dataclasses.replace(healthy(), intents=(greedy, DECLINED))

    result = no_double_charge(snapshot)

    failed_with(result, "captured 2500 > authorized 2000")
    failed_with(result, "authorized 2000 > total 1080")


@pytest.mark.parametrize("order_id", ["o-2", "o-unknown", None])
def test_an_open_authorization_without_a_confirmed_order_fails(order_id: str | None) -> None:
    orphan = dataclasses.replace(AUTHORIZED, intent_id="pi_7", order_id=order_id, amount=540)
    snapshot = dataclasses.replace(healthy(), intents=(AUTHORIZED, orphan))

    failed_with(no_double_charge(snapshot), "pi_7 (540) still authorized")


def test_money_kept_for_a_cancelled_order_fails() -> None:
    kept = dataclasses.replace(DECLINED, status="succeeded", amount_received=540)
    snapshot = dataclasses.replace(healthy(), intents=(AUTHORIZED, kept))

    failed_with(no_double_charge(snapshot), "order o-2 is CANCELLED but 540 stays captured")


def test_without_reconciliation_invariant_2_cannot_pass() -> None:
    snapshot = dataclasses.replace(healthy(), reconciliation_ran=False)

    failed_with(no_double_charge(snapshot), "ReconcilePayments did not run")


def test_units_appearing_or_vanishing_fail_invariant_3() -> None:
    oversold = StockLevel(sku="MUG", on_hand=3, reserved=0, sold=3)
    snapshot = dataclasses.replace(healthy(), stock=(oversold,))

    result = no_oversell(snapshot)

    failed_with(result, "sold 3 + reserved 0 + available 3 != initial 5")
    failed_with(result, "sold 3 != 2 units in confirmed orders")


def test_negative_counts_leaked_reservations_and_audit_findings_fail_invariant_3() -> None:
    broken = StockLevel(sku="MUG", on_hand=3, reserved=4, sold=2)
    snapshot = dataclasses.replace(
        healthy(), stock=(broken,), audit_discrepancies=("MUG: reserved 4 != active 0",)
    )

    result = no_oversell(snapshot)

    failed_with(result, "MUG: a negative count")
    failed_with(result, "4 units still reserved")
    failed_with(result, "AuditStock: MUG: reserved 4")


def test_a_missing_stock_row_fails_invariant_3() -> None:
    snapshot = dataclasses.replace(healthy(), stock=())

    failed_with(no_oversell(snapshot), "MUG: no stock row")


def test_a_confirmed_order_without_its_parcel_or_a_cancelled_one_with_one_fails() -> None:
    snapshot = dataclasses.replace(healthy(), shipments={"o-1": 2, "o-2": 1})

    result = one_shipping_effect(snapshot)

    failed_with(result, "order o-1 (CONFIRMED) has 2 parcels for 1 merchant(s)")
    failed_with(result, "order o-2 (CANCELLED) has 1 parcels")
    assert one_shipping_effect(dataclasses.replace(healthy(), shipments={})).verdict is (
        Verdict.FAIL
    )


def test_without_the_shipping_pipeline_invariants_4_and_5_say_not_checked_never_pass() -> None:
    snapshot = dataclasses.replace(
        healthy(), shipments=None, message_flow=None, shipments_not_checked="no consumer yet"
    )

    results = check_all(snapshot)

    assert (results[3].verdict, results[3].examined) == (Verdict.NOT_CHECKED, "no consumer yet")
    assert results[4].verdict is Verdict.NOT_CHECKED
    assert violations(results) == 0


def test_unpublished_events_and_unconsumed_messages_fail_invariant_5() -> None:
    flow = MessageFlow(
        unpublished_outbox={"checkout": 2}, queue_depths={"shipping": 3}, dead_letters={}
    )
    snapshot = dataclasses.replace(healthy(), message_flow=flow)

    result = nothing_dropped(snapshot)

    failed_with(result, "outbox checkout: 2 events never published")
    failed_with(result, "queue shipping: 3 messages never consumed")
    assert violations([result]) == 2


def test_a_seed_replays_the_same_plan_and_every_process_kind_dies_once() -> None:
    targets = ["cart", "inventory", "payment", "checkout", "saga-engine", "gateway"]

    first = make_plan(seed=42, checkouts=50, kills=8, kill_targets=targets)
    again = make_plan(seed=42, checkouts=50, kills=8, kill_targets=targets)
    other = make_plan(seed=43, checkouts=50, kills=8, kill_targets=targets)

    assert first == again
    assert first.checkouts != other.checkouts
    assert set(targets) <= {kill.target for kill in first.kills}
    assert [k.at_progress for k in first.kills] == sorted(k.at_progress for k in first.kills)
    assert first.psp_phases[-1].faults == {}  # the faults stop before the load does
    assert len({c.idempotency_key for c in first.checkouts}) == 50

"""The invariant checker on hand-made snapshots: a healthy one passes, and each kind of broken
promise (double order, stuck order, a cancel not kept, a hold or charge the order's status does
not allow, oversell, lost stock, a missing or extra parcel at the carrier, a dropped or parked
message) fails with a counterexample naming it."""

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
from verification.plan import CANCEL_MOMENTS, make_plan
from verification.snapshot import (
    CANCEL_ACCEPTED,
    CANCEL_REFUSED,
    CarrierBooking,
    ClientCheckout,
    CustomerCancel,
    InjectedPoison,
    Intent,
    MessageFlow,
    Order,
    OrderLine,
    QueuedMessage,
    Snapshot,
    StockLevel,
    StoredKey,
)

SHIPPED = Order(
    order_id="o-1", customer_id="c-1", cart_id="cart-1", status="SHIPPED", failure_reason=None,
    total_minor=1_080, lines=(OrderLine(sku="MUG", merchant_id="m-1", quantity=2),),
)  # fmt: skip
DECLINED_ORDER = Order(
    order_id="o-2", customer_id="c-2", cart_id="cart-2", status="CANCELLED",
    failure_reason="PAYMENT_DECLINED", total_minor=540,
    lines=(OrderLine(sku="MUG", merchant_id="m-1", quantity=1),),
)  # fmt: skip
CUSTOMER_CANCELLED = Order(
    order_id="o-3", customer_id="c-3", cart_id="cart-3", status="CANCELLED",
    failure_reason="CUSTOMER_CANCELLED", total_minor=540,
    lines=(OrderLine(sku="MUG", merchant_id="m-1", quantity=1),),
)  # fmt: skip
CAPTURED = Intent(
    intent_id="pi_1", order_id="o-1", status="succeeded", amount=1_080,
    amount_capturable=0, amount_received=1_080,
)  # fmt: skip
DECLINED = Intent(
    intent_id="pi_2", order_id="o-2", status="requires_payment_method", amount=540,
    amount_capturable=0, amount_received=0,
)  # fmt: skip
VOIDED = Intent(
    intent_id="pi_3", order_id="o-3", status="canceled", amount=540,
    amount_capturable=0, amount_received=0,
)  # fmt: skip
HELD = dataclasses.replace(VOIDED, status="requires_capture", amount_capturable=540)
POISON = InjectedPoison(queue="email", message_id="msg-poison")
REFUSED_CANCEL = CustomerCancel(
    customer_id="c-1", order_id="o-1", outcome=CANCEL_REFUSED, answered_status="SHIPPED",
    answers=("409 order-shipped",),
)  # fmt: skip
ACCEPTED_CANCEL = CustomerCancel(
    customer_id="c-3", order_id="o-3", outcome=CANCEL_ACCEPTED, answered_status="CANCELLED",
    answers=("503", "202 CANCELLED"),
)  # fmt: skip
PARCEL = CarrierBooking(shipment_id="s-1", order_id="o-1", merchant_id="m-1")
CALLED_BACK = CarrierBooking(shipment_id="s-3", order_id="o-3", merchant_id="m-1", called_back=True)
PARKED_POISON = QueuedMessage(queue="email-dlq", message_id="msg-poison", dead_letter=True)
FLOW = MessageFlow(
    unpublished_outbox={"checkout": 0},
    queue_depths={"shipping": 0, "email": 0},
    dead_letter_queues=("email-dlq", "shipping-dlq"),
    messages=(PARKED_POISON,),
)


def checkout(n: int, *order_ids: str) -> ClientCheckout:
    return ClientCheckout(customer_id=f"c-{n}", idempotency_key=f"k-{n}", cart_id=f"cart-{n}",
                          order_ids=frozenset(order_ids))  # fmt: skip


def stored(n: int, order_id: str | None, state: str = "COMPLETED") -> StoredKey:
    return StoredKey(customer_id=f"c-{n}", key=f"k-{n}", state=state, order_id=order_id)


def healthy() -> Snapshot:
    """A shipped and charged order whose cancel was refused, a declined one, and one cancelled
    by its customer with its hold voided and its parcel called back; stock conserved, only
    the run's poison in a DLQ."""
    return Snapshot(
        orders=(SHIPPED, DECLINED_ORDER, CUSTOMER_CANCELLED),
        client_checkouts=(checkout(1, "o-1"), checkout(2, "o-2"), checkout(3, "o-3")),
        stored_keys=(stored(1, "o-1"), stored(2, "o-2"), stored(3, "o-3")),
        cancels=(REFUSED_CANCEL, ACCEPTED_CANCEL),
        initial_stock={"MUG": 5},
        stock=(StockLevel(sku="MUG", on_hand=3, reserved=0, sold=2),),
        audit_discrepancies=(),
        intents=(CAPTURED, DECLINED, VOIDED),
        settle_seconds=12.0,
        bookings=(PARCEL, CALLED_BACK),
        message_flow=FLOW,
        injected_poison=(POISON,),
    )


def failed_with(result: InvariantResult, text: str) -> None:
    assert result.verdict is Verdict.FAIL, result
    assert any(text in c for c in result.counterexamples), result.counterexamples


def test_a_healthy_snapshot_passes_every_invariant() -> None:
    results = check_all(healthy())

    assert [r.verdict for r in results] == [Verdict.PASS] * 5, results
    assert violations(results) == 0
    assert "email-dlq 1" in results[4].examined  # the run's own poison is counted, not hidden
    assert "1 accepted, 1 refused as shipped" in results[0].examined


# -- 1 ----------------------------------------------------------------------------------------


def test_two_orders_answered_under_one_key_fail_invariant_1() -> None:
    snapshot = dataclasses.replace(healthy(), client_checkouts=(checkout(1, "o-1", "o-9"),))

    result = one_order_per_key_and_all_settle(snapshot)

    failed_with(result, "was answered 2 orders")
    failed_with(result, "order o-9, which checkout does not have")


def test_two_orders_for_one_cart_fail_invariant_1() -> None:
    twin = dataclasses.replace(DECLINED_ORDER, order_id="o-4", customer_id="c-9", cart_id="cart-1")
    snapshot = dataclasses.replace(healthy(), orders=(*healthy().orders, twin))

    failed_with(one_order_per_key_and_all_settle(snapshot), "cart cart-1 has 2 orders")


def test_more_orders_than_keys_a_customer_sent_fail_invariant_1() -> None:
    second = dataclasses.replace(DECLINED_ORDER, order_id="o-4", customer_id="c-1",
                                 cart_id="cart-9")  # fmt: skip
    snapshot = dataclasses.replace(healthy(), orders=(*healthy().orders, second))

    failed_with(
        one_order_per_key_and_all_settle(snapshot),
        "customer c-1 sent 1 key(s) ['k-1'] but checkout has 2 orders for them",
    )


@pytest.mark.parametrize(
    ("record", "text"),
    [
        (None, "checkout keeps no record of the key"),
        (stored(1, None, state="STARTED"), "checkout keeps a STARTED record of the key"),
        (stored(1, "o-7"), "was answered ['o-1'] but checkout replays order o-7"),
    ],
)
def test_a_key_checkout_does_not_store_as_answered_fails_invariant_1(
    record: StoredKey | None, text: str
) -> None:
    others = (stored(2, "o-2"), stored(3, "o-3"))
    snapshot = dataclasses.replace(
        healthy(), stored_keys=others if record is None else (record, *others)
    )

    failed_with(one_order_per_key_and_all_settle(snapshot), text)


def test_an_order_still_pending_or_a_running_saga_fails_invariant_1() -> None:
    stuck = dataclasses.replace(DECLINED_ORDER, status="PENDING", failure_reason=None)
    snapshot = dataclasses.replace(
        healthy(), orders=(SHIPPED, stuck, CUSTOMER_CANCELLED), running_sagas=("o-2",)
    )

    result = one_order_per_key_and_all_settle(snapshot)

    failed_with(result, "order o-2 still PENDING after 12s")
    failed_with(result, "saga execution o-2 still RUNNING")


def test_an_accepted_cancel_that_shipped_or_a_refused_one_that_did_not_fails() -> None:
    shipped_anyway = dataclasses.replace(ACCEPTED_CANCEL, order_id="o-1")
    refused_unshipped = dataclasses.replace(REFUSED_CANCEL, order_id="o-3")
    snapshot = dataclasses.replace(healthy(), cancels=(shipped_anyway, refused_unshipped))

    result = one_order_per_key_and_all_settle(snapshot)

    failed_with(result, "order o-1: the customer's cancel was accepted (202 CANCELLED) but "
                        "the order ended SHIPPED")  # fmt: skip
    failed_with(result, "order o-3: the customer's cancel was refused")


# -- 2 ----------------------------------------------------------------------------------------


def test_a_cancelled_order_with_a_hold_fails_invariant_2() -> None:
    snapshot = dataclasses.replace(healthy(), intents=(CAPTURED, DECLINED, HELD))

    failed_with(no_double_charge(snapshot), "order o-3 (CANCELLED, total 540) still holds 540")


def test_money_kept_for_a_cancelled_order_fails_invariant_2() -> None:
    kept = dataclasses.replace(VOIDED, status="succeeded", amount_received=540)
    snapshot = dataclasses.replace(healthy(), intents=(CAPTURED, DECLINED, kept))

    failed_with(no_double_charge(snapshot), "order o-3 (CANCELLED, total 540) keeps 540 captured")


def test_a_cancelled_order_refunded_in_full_passes_invariant_2() -> None:
    refunded = dataclasses.replace(
        VOIDED, status="succeeded", amount_received=540, amount_refunded=540
    )
    snapshot = dataclasses.replace(healthy(), intents=(CAPTURED, DECLINED, refunded))

    assert no_double_charge(snapshot).verdict is Verdict.PASS


def test_a_shipped_order_never_captured_fails_invariant_2() -> None:
    uncaptured = dataclasses.replace(
        CAPTURED, status="requires_capture", amount_capturable=1_080, amount_received=0
    )
    snapshot = dataclasses.replace(healthy(), intents=(uncaptured, DECLINED, VOIDED))

    result = no_double_charge(snapshot)

    failed_with(result, "order o-1 (SHIPPED, total 1080) captured 0 and refunded 0")
    failed_with(result, "still holds 1080 authorized beside its capture")


def test_a_shipped_order_partly_refunded_fails_invariant_2() -> None:
    refunded = dataclasses.replace(CAPTURED, amount_refunded=80)
    snapshot = dataclasses.replace(healthy(), intents=(refunded, DECLINED, VOIDED))

    failed_with(no_double_charge(snapshot), "captured 1080 and refunded 80: a shipped order")


def test_a_second_live_intent_is_a_double_charge() -> None:
    twice = dataclasses.replace(
        CAPTURED, intent_id="pi_9", status="requires_capture", amount_capturable=1_080,
        amount_received=0,
    )  # fmt: skip
    snapshot = dataclasses.replace(healthy(), intents=(CAPTURED, twice, DECLINED, VOIDED))

    result = no_double_charge(snapshot)

    failed_with(result, "order o-1 (SHIPPED, total 1080) has 2 live intents ['pi_1', 'pi_9']")
    failed_with(result, "authorized 2160 > its total")


def test_an_authorization_above_the_total_or_a_capture_above_it_fails() -> None:
    greedy = dataclasses.replace(CAPTURED, amount=2_000, amount_received=2_500)
    snapshot = dataclasses.replace(healthy(), intents=(greedy, DECLINED, VOIDED))

    result = no_double_charge(snapshot)

    failed_with(result, "captured 2500 > authorized 2000")
    failed_with(result, "authorized 2000 > its total")


def test_a_confirmed_order_without_its_authorization_fails_invariant_2() -> None:
    confirmed = dataclasses.replace(SHIPPED, status="CONFIRMED")
    voided = dataclasses.replace(CAPTURED, status="canceled", amount_received=0)
    snapshot = dataclasses.replace(
        healthy(), orders=(confirmed, DECLINED_ORDER, CUSTOMER_CANCELLED),
        intents=(voided, DECLINED, VOIDED),
    )  # fmt: skip

    failed_with(no_double_charge(snapshot), "holds 0 and keeps 0: a confirmed order is backed")


@pytest.mark.parametrize("order_id", ["o-unknown", None])
def test_money_held_for_no_known_order_fails_invariant_2(order_id: str | None) -> None:
    orphan = dataclasses.replace(HELD, intent_id="pi_7", order_id=order_id)
    snapshot = dataclasses.replace(healthy(), intents=(*healthy().intents, orphan))

    failed_with(no_double_charge(snapshot), "intent pi_7 holds 540 and keeps 0 for order")


def test_holds_only_the_harness_released_are_reported_not_forgiven() -> None:
    snapshot = dataclasses.replace(
        healthy(), intents=(CAPTURED, DECLINED, HELD), released_by_reconciliation=("pi_3",)
    )

    result = no_double_charge(snapshot)

    failed_with(result, "order o-3 (CANCELLED, total 540) still holds 540")
    assert "holds only that reconciliation released: 1 ['pi_3']" in result.examined


# -- 3 ----------------------------------------------------------------------------------------


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


# -- 4 ----------------------------------------------------------------------------------------


def test_a_live_booking_for_a_cancelled_order_fails_invariant_4() -> None:
    booked = CarrierBooking(shipment_id="s-3", order_id="o-3", merchant_id="m-1")
    snapshot = dataclasses.replace(healthy(), bookings=(PARCEL, booked))

    failed_with(one_shipping_effect(snapshot), "order o-3 (CANCELLED) has 1 live booking(s)")


def test_a_shipped_order_without_its_booking_fails_invariant_4() -> None:
    snapshot = dataclasses.replace(healthy(), bookings=(CALLED_BACK,))

    failed_with(
        one_shipping_effect(snapshot),
        "order o-1 (SHIPPED) has 0 live booking(s) at the carrier for merchant m-1",
    )


def test_a_called_back_parcel_of_a_shipped_order_does_not_count() -> None:
    called_back = CarrierBooking(shipment_id="s-1", order_id="o-1", merchant_id="m-1",
                                 called_back=True)  # fmt: skip
    snapshot = dataclasses.replace(healthy(), bookings=(called_back,))

    failed_with(one_shipping_effect(snapshot), "order o-1 (SHIPPED) has 0 live booking(s)")


def test_a_second_parcel_or_one_for_a_stranger_fails_invariant_4() -> None:
    extra = (
        CarrierBooking(shipment_id="s-9", order_id="o-1", merchant_id="m-1"),
        CarrierBooking(shipment_id="s-8", order_id="o-1", merchant_id="m-2"),
        CarrierBooking(shipment_id="s-7", order_id="o-unknown", merchant_id="m-1"),
    )
    snapshot = dataclasses.replace(healthy(), bookings=(PARCEL, CALLED_BACK, *extra))

    result = one_shipping_effect(snapshot)

    failed_with(result, "order o-1 (SHIPPED) has 2 live booking(s) at the carrier for merchant")
    failed_with(result, "a booking for merchant m-2, which sells nothing in it")
    failed_with(result, "booking s-7 for order o-unknown, unknown to checkout")


def test_without_bookings_or_the_pipeline_invariants_4_and_5_say_not_checked_never_pass() -> None:
    snapshot = dataclasses.replace(
        healthy(), bookings=None, message_flow=None, bookings_not_checked="no bookings file"
    )

    results = check_all(snapshot)

    assert (results[3].verdict, results[3].examined) == (Verdict.NOT_CHECKED, "no bookings file")
    assert results[4].verdict is Verdict.NOT_CHECKED
    assert violations(results) == 0


# -- 5 ----------------------------------------------------------------------------------------


def test_unpublished_events_and_unconsumed_messages_fail_invariant_5() -> None:
    flow = MessageFlow(
        unpublished_outbox={"checkout": 2}, queue_depths={"shipping": 3}, messages=()
    )
    snapshot = dataclasses.replace(healthy(), message_flow=flow, injected_poison=())

    result = nothing_dropped(snapshot)

    failed_with(result, "outbox checkout: 2 events never published")
    failed_with(result, "queue shipping: 3 messages never consumed")
    assert violations([result]) == 2


def test_a_dead_letter_the_run_did_not_inject_fails_invariant_5() -> None:
    parked = QueuedMessage(queue="shipping-dlq", message_id="msg-1", dead_letter=True,
                           describes="ShipmentCreated of shipment s-1")  # fmt: skip
    flow = dataclasses.replace(FLOW, messages=(PARKED_POISON, parked))
    snapshot = dataclasses.replace(healthy(), message_flow=flow)

    failed_with(
        nothing_dropped(snapshot),
        "shipping-dlq: message msg-1 (ShipmentCreated of shipment s-1) parked, not injected",
    )


def test_poison_that_vanished_instead_of_being_parked_fails_invariant_5() -> None:
    flow = dataclasses.replace(FLOW, messages=())
    snapshot = dataclasses.replace(healthy(), message_flow=flow)

    failed_with(nothing_dropped(snapshot), "poison message msg-poison put on email vanished")


# -- the plan ---------------------------------------------------------------------------------


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


def test_the_plan_has_cancels_long_outages_refusals_and_one_poison_message() -> None:
    plan = make_plan(seed=7, checkouts=400, kills=3, kill_targets=["cart"], outage_seconds=30)

    delays = [c.cancel_after_seconds for c in plan.checkouts if c.cancel_after_seconds is not None]
    assert 0.06 * 400 < len(delays) < 0.2 * 400
    assert min(delays) >= CANCEL_MOMENTS[0][0]
    assert max(delays) <= CANCEL_MOMENTS[-1][1]
    outages = [p for p in plan.psp_phases if "outage_seconds" in p.faults]
    assert [(p.faults["outage_seconds"], p.lasts_seconds) for p in outages] == [(30, 30)] * 2
    assert [p.faults["outage_hang"] for p in outages] == [False, True]
    kinds = {name for p in plan.psp_phases for name in p.faults}
    assert {"conflict_rate", "rate_limit_seconds", "response_delay_ms"} <= kinds
    moments = [p.at_progress for p in plan.psp_phases]
    assert moments == sorted(moments)
    assert plan.psp_phases[-1].faults == {}
    (poison,) = plan.poison
    assert poison.queue in {"shipping", "email", "invoice", "analytics"}
    assert plan.left_out == ()
    quiet = make_plan(seed=7, checkouts=400, kills=3, kill_targets=["cart"], outage_seconds=0)
    assert not any(p.lasts_seconds for p in quiet.psp_phases)
    assert [c.lines for c in quiet.checkouts] == [c.lines for c in plan.checkouts]


def test_phases_the_psp_simulator_cannot_play_are_left_out_and_said() -> None:
    plan = make_plan(seed=7, checkouts=40, kills=1, kill_targets=["cart"],
                     psp_fault_fields=frozenset({"response_delay_ms"}))  # fmt: skip

    kinds = {name for p in plan.psp_phases for name in p.faults}
    assert not kinds & {"conflict_rate", "rate_limit_seconds", "outage_seconds"}
    assert [p.faults for p in plan.psp_phases if p.lasts_seconds == 40] == [{"error_rate": 1.0}] * 2
    assert [why.split(":")[0] for why in plan.left_out] == [
        "outage", "conflicts", "rate limit burst"
    ]  # fmt: skip
    assert "error_rate 1.0 instead" in plan.left_out[0]

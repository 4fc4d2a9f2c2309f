"""The Region drill's own checks (verification.region_checks) fed broken states: a purchase
authorized twice, charged twice, a hold with no order, an acknowledged order lost, a stale
Region's write and PSP call; and the states they must let pass."""

from __future__ import annotations

from collections.abc import Iterable

from verification.region_checks import (
    PurchaseRecord,
    TableMark,
    acknowledged_fate,
    attribution,
    double_charges,
    intents_by_purchase,
    orphan_holds,
    second_authorizations,
    stale_psp_requests,
    stale_writes,
)
from verification.snapshot import Intent

ALICE = ("alice", "key-1")


def record(
    *, carts: tuple[str, ...] = ("cart-1",), a: Iterable[str] = (), b: Iterable[str] = ()
) -> PurchaseRecord:
    return PurchaseRecord(
        customer_id=ALICE[0], key=ALICE[1], carts=carts,
        answered_in_a=frozenset(a), answered_in_b=frozenset(b),
    )  # fmt: skip


def intent(intent_id: str, order_id: str, status: str, *, captured: int = 0) -> Intent:
    held = 500 if status == "requires_capture" else 0
    return Intent(
        intent_id=intent_id, order_id=order_id, status=status, amount=500,
        amount_capturable=held, amount_received=captured,
    )  # fmt: skip


def test_a_retried_cart_authorized_a_second_time_is_a_violation() -> None:
    # A authorized order-a and was lost with it; B's retry under the same key and cart placed
    # order-b and authorized again instead of replaying the first authorization.
    records = [record(a={"order-a"}, b={"order-b"})]
    intents = [intent("pi_1", "order-a", "canceled"), intent("pi_2", "order-b", "succeeded",
                                                              captured=500)]  # fmt: skip
    grouped, unattributed = intents_by_purchase(intents, attribution(records))

    violations, expected = second_authorizations(grouped, records)

    assert unattributed == []
    assert len(violations) == 1
    assert "authorized 2 times" in violations[0]
    assert "pi_1" in violations[0]
    assert "pi_2" in violations[0]
    assert expected == []
    assert double_charges(grouped) == []  # the first was voided: one charge


def test_a_second_authorization_after_the_cart_was_filled_again_is_reported_apart() -> None:
    records = [record(carts=("cart-1", "cart-2"), a={"order-a"}, b={"order-b"})]
    intents = [intent("pi_1", "order-a", "canceled"), intent("pi_2", "order-b", "requires_capture")]
    grouped, _ = intents_by_purchase(intents, attribution(records))

    violations, expected = second_authorizations(grouped, records)

    assert violations == []
    assert len(expected) == 1
    assert "filled again" in expected[0]


def test_a_replayed_authorization_and_a_declined_attempt_are_one_authorization() -> None:
    records = [record(a={"order-a"}, b={"order-a"})]
    intents = [intent("pi_0", "order-a", "requires_payment_method"),
               intent("pi_1", "order-a", "succeeded", captured=500)]  # fmt: skip
    grouped, _ = intents_by_purchase(intents, attribution(records))

    assert second_authorizations(grouped, records) == ([], [])
    assert double_charges(grouped) == []


def test_two_live_intents_of_one_purchase_are_a_double_charge() -> None:
    records = [record(a={"order-a"}, b={"order-b"})]
    intents = [intent("pi_1", "order-a", "requires_capture"),
               intent("pi_2", "order-b", "succeeded", captured=500)]  # fmt: skip
    grouped, _ = intents_by_purchase(intents, attribution(records))

    charges = double_charges(grouped)

    assert len(charges) == 1
    assert "charged by 2 intents" in charges[0]


def test_an_order_only_a_database_kept_is_attributed_by_its_idempotency_record() -> None:
    # The client never heard back from A: only A's own idempotency record names the order.
    records = [record(b={"order-b"})]
    keys_in_a = {ALICE: "order-a"}
    intents = [intent("pi_1", "order-a", "requires_capture"),
               intent("pi_2", "order-b", "requires_capture")]  # fmt: skip

    grouped, unattributed = intents_by_purchase(intents, attribution(records, {}, keys_in_a))
    without, lost = intents_by_purchase(intents, attribution(records))

    assert unattributed == []
    assert len(grouped[ALICE]) == 2
    assert len(double_charges(grouped)) == 1
    assert [i.intent_id for i in lost] == ["pi_1"]
    assert double_charges(without) == []


def test_a_hold_whose_order_region_b_lacks_is_an_orphan() -> None:
    intents = [intent("pi_1", "order-a", "requires_capture"),
               intent("pi_2", "order-b", "requires_capture"),
               intent("pi_3", "order-c", "canceled")]  # fmt: skip

    orphans = orphan_holds(intents, {"order-b"})

    assert len(orphans) == 1
    assert "pi_1" in orphans[0]


def test_an_acknowledged_order_neither_in_b_nor_recreated_is_lost() -> None:
    fate = acknowledged_fate([record(a={"order-a"})], {"order-x"}, {}, missing_at_promotion=[])

    assert len(fate.lost) == 1
    assert "order-a" in fate.lost[0]
    assert fate.kept == fate.recreated_same_id == fate.recreated_other_id == ()


def test_acknowledged_orders_kept_or_recreated_by_their_key() -> None:
    kept = record(a={"order-a"})
    same = PurchaseRecord(customer_id="bob", key="k", carts=("c",),
                          answered_in_a=frozenset({"order-s"}),
                          answered_in_b=frozenset({"order-s"}))  # fmt: skip
    other = PurchaseRecord(customer_id="carol", key="k", carts=("c",),
                           answered_in_a=frozenset({"order-o"}),
                           answered_in_b=frozenset())  # fmt: skip
    present = {"order-a", "order-s", "order-new"}

    fate = acknowledged_fate(
        [kept, same, other], present, {("carol", "k"): "order-new"},
        missing_at_promotion=["order-s", "order-o"],
    )  # fmt: skip

    assert fate.kept == ("order-a",)
    assert fate.recreated_same_id == ("order-s",)
    assert fate.recreated_other_id == ("order-o -> order-new",)
    assert fate.lost == ()


def test_a_stale_region_that_writes_or_calls_the_psp_is_caught() -> None:
    before = {"checkout.orders": TableMark(3, "aaa"), "saga.executions": TableMark(2, "bbb"),
              "cart.carts": TableMark(1, "ccc")}  # fmt: skip
    after = {"checkout.orders": TableMark(4, "ddd"), "saga.executions": TableMark(2, "eee"),
             "cart.carts": TableMark(1, "ccc"), "platform.new": TableMark(0, "")}  # fmt: skip

    writes = stale_writes(before, after)

    assert writes == [
        "checkout.orders: 3 -> 4 rows",
        "platform.new appeared",
        "saga.executions: rows changed in place (2 rows)",
    ]
    assert stale_writes(before, dict(before)) == []
    assert stale_psp_requests(["GET /v1/a"], ["GET /v1/a", "POST /v1/b"]) == [
        "the PSP received POST /v1/b"
    ]
    assert stale_psp_requests(["GET /v1/a"], ["GET /v1/a"]) == []

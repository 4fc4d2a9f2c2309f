"""The checkout benchmark's closing audit on hand-made states: a healthy run passes, and an extra
PSP charge, a stock count off by one or a charge in another currency each fail it, naming the
order or SKU; a failed audit fails the run (its exit code), whatever the speed. The invariants
themselves are tested in test_invariants.py; this is the benchmark's wiring of them."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.checkout_audit import AuditReport, audit_snapshot
from bench.checkout_baselines import Baseline
from bench.checkout_load import exit_code, parse_plan, report
from verification.snapshot import (
    ClientCheckout,
    Intent,
    Order,
    OrderLine,
    Snapshot,
    StockLevel,
    StoredKey,
)

INITIAL = 1_000


def order(n: int, status: str) -> Order:
    return Order(order_id=f"o-{n}", customer_id=f"bench-{n}", cart_id=f"cart-{n}", status=status,
                 failure_reason=None, total_minor=2_700,
                 lines=(OrderLine(sku="MUG", merchant_id="default", quantity=1),))  # fmt: skip


def answered(n: int) -> ClientCheckout:
    return ClientCheckout(customer_id=f"bench-{n}", idempotency_key=f"k-{n}",
                          cart_id=f"cart-{n}", order_ids=frozenset({f"o-{n}"}))  # fmt: skip


def key(n: int) -> StoredKey:
    return StoredKey(customer_id=f"bench-{n}", key=f"k-{n}", state="COMPLETED", order_id=f"o-{n}")


HELD = Intent(intent_id="pi_1", order_id="o-1", status="requires_capture", amount=2_700,
              amount_capturable=2_700, amount_received=0)  # fmt: skip
CAPTURED = Intent(intent_id="pi_2", order_id="o-2", status="succeeded", amount=2_700,
                  amount_capturable=0, amount_received=2_700)  # fmt: skip
CURRENCIES = {"o-1": "USD", "o-2": "USD"}


def healthy() -> Snapshot:
    """One order CONFIRMED (authorized), one SHIPPED (captured); two units sold."""
    return Snapshot(
        orders=(order(1, "CONFIRMED"), order(2, "SHIPPED")),
        client_checkouts=(answered(1), answered(2)),
        stored_keys=(key(1), key(2)),
        initial_stock={"MUG": INITIAL},
        stock=(StockLevel(sku="MUG", on_hand=INITIAL - 2, reserved=0, sold=2),),
        audit_discrepancies=(),
        intents=(HELD, CAPTURED),
    )


def audited(snapshot: Snapshot, intent_currencies: dict[str, str] | None = None) -> AuditReport:
    currencies = intent_currencies or {"pi_1": "USD", "pi_2": "usd", "pi_9": "USD"}
    return audit_snapshot(snapshot, order_currencies=CURRENCIES, intent_currencies=currencies)


def test_a_healthy_run_passes_the_audit() -> None:
    found = audited(healthy())

    assert found.passed, found.mismatches
    assert (found.orders, found.intents, found.skus) == (2, 2, 1)
    assert [r.number for r in found.results] == [1, 2, 3]


def test_a_second_charge_for_an_order_fails_the_audit() -> None:
    second = dataclasses.replace(CAPTURED, intent_id="pi_9", order_id="o-1")
    found = audited(dataclasses.replace(healthy(), intents=(HELD, CAPTURED, second)))

    assert not found.passed
    assert any(m.startswith("2. order o-1") and "2 live intents" in m for m in found.mismatches)


def test_a_stock_count_off_by_one_fails_the_audit() -> None:
    off_by_one = StockLevel(sku="MUG", on_hand=INITIAL - 1, reserved=0, sold=2)
    found = audited(dataclasses.replace(healthy(), stock=(off_by_one,)))

    assert not found.passed
    assert any(m.startswith("3. MUG:") and f"!= initial {INITIAL}" in m for m in found.mismatches)


def test_a_charge_in_another_currency_fails_the_audit() -> None:
    found = audited(healthy(), intent_currencies={"pi_1": "EUR", "pi_2": "USD"})

    assert found.mismatches == ("currency: intent pi_1 is in EUR, its order o-1 in USD",)


def test_a_failed_audit_fails_the_run_and_is_in_its_report() -> None:
    plan = parse_plan(["--stored", "0", "--concurrency", "2"])
    steps = [step("unloaded", 1, 5.0), step("closed", 2, 70.0), step("open", None, 56.0)]
    baseline = Baseline(name="pgbench -N", per_second=5_000.0, detail="")
    ping = Baseline(name="grpc.aio ping", per_second=1_000.0, detail="")
    broken = audited(dataclasses.replace(healthy(), intents=(HELD,)))

    result = report(plan, "external", ping, baseline, steps, {0: 0.0}, broken)

    assert exit_code(result) == 1
    assert result["audit"]["passed"] is False
    assert result["audit"]["mismatches"] == list(broken.mismatches)
    passed = report(plan, "external", ping, baseline, steps, {0: 0.0}, audited(healthy()))
    assert exit_code(passed) == 0
    # Speed is reported against the targets, never a reason to fail.
    throughput = next(v for k, v in result["targets"].items() if k.startswith("settled"))
    assert (throughput["value"], throughput["met"], throughput["aim_met"]) == (70.0, True, False)


def step(mode: str, concurrency: int | None, rate: float) -> dict[str, Any]:
    latency = {"p50": 40.0, "p95": 45.0, "p99": 49.0}
    return {
        "stored_orders": 0, "mode": mode, "concurrency": concurrency, "sent": 20,
        "offered_per_second": rate if mode == "open" else None, "confirmed_per_second": rate,
        "accept_ms": latency, "confirmed_ms": latency, "cpu_seconds_per_checkout": 0.025,
        "cpu_ms_per_checkout": {"checkout": 10.0, "postgresql": 15.0, "load generator": 3.0},
    }  # fmt: skip
